-- HAProxy asks revokd about a request's bearer token (GET /v1/auth) with
-- the Lua httpclient of HAProxy >= 2.5, and leaves the answer in txn
-- variables for haproxy.cfg: txn.revokd_status (200, 401, 503 — 503 too
-- when revokd cannot be reached: closed), txn.revokd_subject and
-- txn.revokd_token_id (on 200), txn.revokd_challenge (on 401).
-- Load it with `lua-load /etc/haproxy/revokd.lua`; the address is set by
-- `setenv REVOKD_AUTH_URL http://127.0.0.1:8080/v1/auth` in `global`.

local url = os.getenv("REVOKD_AUTH_URL") or "http://127.0.0.1:8080/v1/auth"

local function first(headers, name)
  local values = headers and headers[name]
  if values == nil then return nil end
  return values[0] or values[1]
end

core.register_action("revokd_auth", { "http-req" }, function(txn)
  local headers = {}
  local authorization = first(txn.http:req_get_headers(), "authorization")
  if authorization ~= nil then
    headers["authorization"] = { authorization }
  end
  local ok, res = pcall(function()
    return core.httpclient():get({ url = url, headers = headers, timeout = 2000 })
  end)
  if not ok or res == nil or res.status == nil or res.status == 0 then
    txn:set_var("txn.revokd_status", 503)
    return
  end
  txn:set_var("txn.revokd_status", res.status)
  if res.status == 200 then
    txn:set_var("txn.revokd_subject", first(res.headers, "x-auth-subject") or "")
    txn:set_var("txn.revokd_token_id", first(res.headers, "x-auth-token-id") or "")
  else
    txn:set_var("txn.revokd_challenge", first(res.headers, "www-authenticate") or 'Bearer realm="revokd"')
  end
end)
