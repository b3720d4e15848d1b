// A strict OpenID provider on loopback (npm `oidc-provider`) for the checks oauth2-mock-server
// does not make: PKCE required (S256) and verified, exact redirect URIs, single-use codes.
// OO_PROVIDER_PORT: where to listen; OO_REDIRECT_URI: the one redirect URI of the client.
// Development interactions are on: any login name signs in as that subject, with email
// `<name>@example.org`. Prints `issuer <url>` once it listens; runs until stdin closes.
import Provider from 'oidc-provider';

const port = Number(process.env.OO_PROVIDER_PORT);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'oo-test-client',
    client_secret: 'oo-test-secret',
    redirect_uris: [process.env.OO_REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  pkce: { methods: ['S256'], required: () => true },
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, email: `${id}@example.org`, email_verified: true }),
  }),
  cookies: { keys: ['oo-test-cookie-key'] },
  features: { devInteractions: { enabled: true } },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
const server = provider.listen(port, '127.0.0.1');
server.on('listening', () => console.log(`issuer ${issuer}`));
process.stdin.resume();
process.stdin.on('end', () => { server.close(); process.exit(0); });
