#!/usr/bin/env node
// An independent relying party (npm `openid-client`, a certified client)
// runs the authorization-code flow with PKCE against an OpenID provider,
// validating its discovery document, ID token (against its JWKS), UserInfo
// and refresh. Used by infra's tests to check the `infra server --dev`
// provider; it plays the browser itself for the provider's sign-in form.
//
//   NODE_EXTRA_CA_CERTS=server.crt node tests/oidc/rp_check.mjs ISSUER CLIENT_ID CLIENT_SECRET
//
// Prints one JSON line {claims, userinfo, refreshed} on success; exits 1
// with the error otherwise.
import * as client from 'openid-client';

const [issuer, clientId, clientSecret] = process.argv.slice(2);
if (!issuer || !clientId || !clientSecret) {
  console.error('usage: rp_check.mjs ISSUER CLIENT_ID CLIENT_SECRET');
  process.exit(2);
}

try {
  const config = await client.discovery(new URL(issuer), clientId, clientSecret);
  const codeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const redirectUri = 'http://localhost:45678/cb';
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: 'openid email profile groups offline_access',
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    state,
    nonce,
  });

  // The browser: the sign-in form, then its redirect.
  const form = await (await fetch(authUrl)).text();
  const rid = form.match(/name="rid" value="([^"]+)"/)?.[1];
  const action = form.match(/<form method="post" action="([^"]+)"/)?.[1]?.replaceAll('&amp;', '&');
  if (!rid || !action) throw new Error(`no sign-in form in: ${form.slice(0, 300)}`);
  const posted = await fetch(action, {
    method: 'POST',
    body: new URLSearchParams({ rid, username: 'rp-user', groups: 'team-a, team-b' }),
    redirect: 'manual',
  });
  const location = posted.headers.get('location');
  if (!location) throw new Error(`the form post answered ${posted.status} without a redirect`);

  const tokens = await client.authorizationCodeGrant(config, new URL(location), {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  console.log(JSON.stringify({ claims, userinfo, refreshed: Boolean(refreshed.access_token && refreshed.id_token) }));
} catch (err) {
  console.error(`rp_check: ${err?.stack ?? err}`);
  if (err?.cause) console.error('cause:', err.cause);
  process.exit(1);
}
