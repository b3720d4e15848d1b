// A real OpenID provider on loopback for oO's sign-in tests. It signs RS256 ID tokens with its
// own JWKS. OO_MOCK_TAMPER makes it misbehave in one way, so that a test can show oO refuses it:
//   nonce | audience | issuer | expired | unsigned | wrong_key | azp (issued to another party)
//   | hs256 (discovery lists HS256 and the ID token is an HMAC under the client secret)
// OO_MOCK_EMAIL and OO_MOCK_SUBJECT set the person it signs in; GET /oo-test/token-requests
// counts the calls to its token endpoint. It prints one line
// `issuer <url>` once it listens, and runs until its standard input closes.
import { OAuth2Server } from 'oauth2-mock-server';
import { createHmac, generateKeyPairSync, sign } from 'node:crypto';
import { createServer } from 'node:http';

const tamper = process.env.OO_MOCK_TAMPER ?? 'none';
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');

server.service.on('beforeTokenSigning', (token) => {
  const now = Math.floor(Date.now() / 1000);
  token.payload.sub = process.env.OO_MOCK_SUBJECT ?? 'subject-1';
  token.payload.email = process.env.OO_MOCK_EMAIL ?? 'oidc-person@example.org';
  if (tamper === 'nonce') token.payload.nonce = 'not-the-nonce';
  if (tamper === 'audience') token.payload.aud = 'another-client';
  if (tamper === 'issuer') token.payload.iss = 'https://evil.example.org';
  if (tamper === 'expired') { token.payload.iat = now - 7200; token.payload.exp = now - 3600; }
  if (tamper === 'azp') token.payload.azp = 'another-client';
});

// Listeners run synchronously, before the response is sent: no awaiting in here.
const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
server.service.on('beforeResponse', (response) => {
  const idToken = response.body?.id_token;
  if (!idToken) return;
  const [header, payload] = idToken.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  if (tamper === 'unsigned') {
    response.body.id_token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
  }
  if (tamper === 'wrong_key') {
    const { kid } = JSON.parse(Buffer.from(header, 'base64url').toString());
    const input = `${b64({ alg: 'RS256', typ: 'JWT', kid })}.${b64(claims)}`;
    response.body.id_token = `${input}.${sign('sha256', Buffer.from(input), otherKey).toString('base64url')}`;
  }
  if (tamper === 'hs256') {
    const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
    const mac = createHmac('sha256', process.env.OO_MOCK_CLIENT_SECRET ?? 'oo-test-secret').update(input);
    response.body.id_token = `${input}.${mac.digest('base64url')}`;
  }
});

// Served by our own HTTP server in front of the mock's handler, so that discovery can be edited.
// GET /oo-test/token-requests answers how many times the token endpoint was called.
const handler = server.service.requestHandler;
let tokenRequests = 0;
const http = createServer((req, res) => {
  if (req.url === '/oo-test/token-requests') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ count: tokenRequests }));
    return;
  }
  if (req.method === 'POST' && req.url.startsWith('/token')) tokenRequests += 1;
  if (tamper === 'hs256' && req.url.startsWith('/.well-known/openid-configuration')) {
    const write = res.end.bind(res);
    res.end = (body, ...rest) => {
      const config = JSON.parse(body);
      config.id_token_signing_alg_values_supported = ['RS256', 'HS256'];
      const text = JSON.stringify(config);
      res.setHeader('content-length', Buffer.byteLength(text));
      return write(text, ...rest);
    };
  }
  handler(req, res);
});
await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
server.issuer.url = `http://127.0.0.1:${http.address().port}`;
console.log(`issuer ${server.issuer.url}`);
process.stdin.resume();
process.stdin.on('end', () => { http.close(); process.exit(0); });
