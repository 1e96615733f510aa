// A real OpenID provider (panva's oidc-provider) for revokd's integration
// tests; testkit's `Idp` (testkit/src/idp.rs) runs it. Test use only: plain
// http on 127.0.0.1, an in-memory store, one fixed client.
//
// oidc-provider 8.x (package-lock.json pins it): 9.x warns at start that it
// wants Node 22 LTS or later, 8.x supports Node 18 and 20.
//
// Usage:
//   node provider.mjs --port PORT --keys-dir DIR [--kids new,old]
//                     [--client-id ID] [--client-secret SECRET]
//                     [--resource URI] [--ttl SECONDS]
//
//   --port           listens on 127.0.0.1:PORT; the issuer is
//                    http://127.0.0.1:PORT (no trailing slash).
//   --keys-dir       where the signing keys live: DIR/<kid>.json, a private
//                    EC P-256 JWK (kid, alg ES256, use sig). A kid without a
//                    file gets a new key, saved there (mode 0600).
//   --kids           the kids in the order the provider holds them
//                    (default k1). Tokens are signed with the first one; the
//                    others are still published in the JWKS, so restarting
//                    with `--kids new,old` is a key rotation.
//   --client-id      the one client: confidential, client_credentials only,
//                    registered for HTTP Basic (client_secret_basic; the
//                    provider takes client_secret_post too) (default
//                    revokd-test).
//   --client-secret  its secret (default: $IDP_CLIENT_SECRET, else
//                    revokd-test-secret).
//   --resource       the resource (API) every access token is for, and its
//                    `aud` (default urn:revokd:api); its scope is `api`.
//   --ttl            access token lifetime in seconds (default 600).
//
// The access token (client_credentials at the token endpoint) is an RFC 9068
// JWT: header typ at+jwt, alg ES256, kid of the first key; claims jti, sub
// (the client id), iat, exp, iss, aud, client_id, scope when asked for.
//
// Besides the provider's own routes:
//   GET /__test/jwks-fetches  -> {"count": N}, the requests (any method) to
//                                the JWKS endpoint since this process started.
//
// Prints `ready <issuer>` on stdout once listening; exits 0 on SIGTERM or
// SIGINT.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

// Only the notices this configuration cannot avoid are dropped (the
// in-memory adapter is what a test wants); anything else oidc-provider
// says still reaches stderr.
const QUIET = [
  'a quick start development-only in-memory adapter is used',
];
for (const level of ['warn', 'info']) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    const text = String(args[0] ?? '');
    if (QUIET.some((notice) => text.includes(notice))) return;
    original(...args);
  };
}

const { default: Provider, errors } = await import('oidc-provider');

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'keys-dir': { type: 'string' },
    kids: { type: 'string', default: 'k1' },
    'client-id': { type: 'string', default: 'revokd-test' },
    'client-secret': {
      type: 'string',
      default: process.env.IDP_CLIENT_SECRET || 'revokd-test-secret',
    },
    resource: { type: 'string', default: 'urn:revokd:api' },
    ttl: { type: 'string', default: '600' },
  },
  strict: true,
});

function usage(message) {
  console.error(`provider.mjs: ${message}`);
  process.exit(2);
}

const port = Number(args.port);
if (!Number.isInteger(port) || port <= 0 || port > 65535) usage('--port PORT is required');
if (!args['keys-dir']) usage('--keys-dir DIR is required');
const kids = args.kids.split(',').map((kid) => kid.trim()).filter(Boolean);
if (kids.length === 0) usage('--kids needs at least one kid');
if (kids.some((kid) => !/^[A-Za-z0-9._-]+$/.test(kid))) usage('a kid is [A-Za-z0-9._-]+');
const ttl = Number(args.ttl);
if (!Number.isInteger(ttl) || ttl <= 0) usage('--ttl is a positive number of seconds');

const issuer = `http://127.0.0.1:${port}`;
const resource = args.resource;

// The key of `kid`: loaded from its file, or made and saved there.
function signingKey(dir, kid) {
  const file = path.join(dir, `${kid}.json`);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = {
    ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig',
  };
  fs.writeFileSync(file, `${JSON.stringify(jwk)}\n`, { mode: 0o600 });
  return jwk;
}

fs.mkdirSync(args['keys-dir'], { recursive: true });
const keys = kids.map((kid) => signingKey(args['keys-dir'], kid));

const JWKS_PATH = '/jwks';

const provider = new Provider(issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    // the default, RS256, would need an RSA key in `jwks`
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys },
  // Nothing here uses cookies (no browser flows); set so it does not warn.
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  routes: { jwks: JWKS_PATH },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, indicator) {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          scope: 'api',
          audience: resource,
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  ttl: {
    ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL || ttl,
  },
  clientBasedCORS: () => false,
});

let jwksFetches = 0;
const callback = provider.callback();

const server = http.createServer((req, res) => {
  const { pathname } = new URL(req.url, issuer);
  if (pathname === '/__test/jwks-fetches') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify({ count: jwksFetches }));
    return;
  }
  if (pathname === JWKS_PATH) jwksFetches += 1;
  callback(req, res);
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
server.on('error', (error) => {
  console.error(`provider.mjs: ${error.message}`);
  process.exit(1);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
