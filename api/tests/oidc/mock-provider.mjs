// A real OpenID provider on loopback for oO's sign-in tests. It signs RS256 ID tokens with its
// own JWKS. OO_MOCK_TAMPER makes it misbehave in one way, so that a test can show oO refuses it:
//   nonce | audience | issuer | expired | unsigned | wrong_key
// OO_MOCK_EMAIL and OO_MOCK_SUBJECT set the person it signs in. It prints one line
// `issuer <url>` once it listens, and runs until its standard input closes.
import { OAuth2Server } from 'oauth2-mock-server';
import { generateKeyPairSync, sign } from 'node:crypto';

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
});

await server.start(0, '127.0.0.1');
server.issuer.url = `http://127.0.0.1:${server.address().port}`;
console.log(`issuer ${server.issuer.url}`);
process.stdin.resume();
process.stdin.on('end', async () => { await server.stop(); process.exit(0); });
