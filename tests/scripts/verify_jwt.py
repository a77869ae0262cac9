"""Verifies a saas-rs access token with PyJWT, an implementation saas-rs did not write,
using only the server's JWKS. Usage: verify_jwt.py JWKS_FILE TOKEN_FILE AUDIENCE ISSUER.
Prints the claims as JSON and exits 0, or prints the error and exits 1."""
import json
import sys

import jwt

jwks_path, token_path, audience, issuer = sys.argv[1:5]
jwks = json.load(open(jwks_path))
token = open(token_path).read().strip()
try:
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    # The algorithm comes from the published key, never from the token's header.
    key = jwt.PyJWK(jwk)
    claims = jwt.decode(token, key.key, algorithms=[jwk["alg"]], audience=audience, issuer=issuer)
except Exception as error:  # noqa: BLE001 - any failure is a verification failure
    print(f"{type(error).__name__}: {error}")
    sys.exit(1)
print(json.dumps(claims))
