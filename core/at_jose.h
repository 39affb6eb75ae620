/*
 * at_jose.h: JSON Web Keys (RFC 7517/7518), thumbprints (RFC 7638) and
 * flattened JWS (RFC 7515 §7.2.2) as ACME uses them (RFC 8555 §6.2), plus
 * external account binding MACs (RFC 8555 §7.3.4).
 *
 * The bytes that are signed are the bytes that are sent: the protected header
 * and the payload are serialised once, base64url-encoded once, and that exact
 * string goes both into the signature input and into the request body.
 */
#ifndef AT_JOSE_H
#define AT_JOSE_H

#include <stddef.h>
#include <jansson.h>
#include <openssl/evp.h>
#include "at_error.h"
#include "at_buf.h"

/* JWS algorithm for a key: "ES256" (P-256), "ES384" (P-384), "RS256" (RSA).
 * NULL for unsupported keys. */
const char *at_jws_alg(EVP_PKEY *key);

/* Public JWK of a key: {"crv","kty","x","y"} or {"e","kty","n"}. Integers are
 * big-endian with no leading zero bytes (RSA n/e); EC coordinates are padded
 * to the field size as RFC 7518 §6.2.1.2 requires. New reference. */
json_t *at_jwk_public(EVP_PKEY *key, at_error *err);

/* Public key from a JWK (EC P-256/P-384 with the point checked to be on the
 * curve, or RSA). For verifiers such as a test CA. New EVP_PKEY or NULL. */
EVP_PKEY *at_jwk_to_pkey(const json_t *jwk, at_error *err);

/* RFC 7638 thumbprint: base64url(SHA-256(canonical JWK)) into out (>= 44 bytes). */
int at_jwk_thumbprint(EVP_PKEY *key, char *out, size_t outsz, at_error *err);

/* Key authorization "token.thumbprint" (RFC 8555 §8.1). Malloc'd or NULL. */
char *at_key_authorization(const char *token, EVP_PKEY *account_key, at_error *err);

/* base64url(SHA-256(key_authorization)): the dns-01 TXT value. Malloc'd. */
char *at_dns01_txt_value(const char *key_authorization, at_error *err);

/* Build a flattened JWS {"protected","payload","signature"} as a compact JSON
 * string into out.
 *   key:     signing key
 *   kid:     account URL; when NULL the header carries "jwk" instead
 *   nonce:   Replay-Nonce; NULL omits it (keyChange inner JWS)
 *   url:     the request URL
 *   payload: the exact payload bytes; NULL or "" for POST-as-GET (empty payload)
 * ECDSA signatures are the fixed-size R||S form (RFC 7518 §3.4). */
int at_jws_sign(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                const char *payload, at_buf *out, at_error *err);

/* External account binding (RFC 8555 §7.3.4): a JWS over the account's public
 * JWK, with protected {"alg": mac_alg, "kid": eab_kid, "url": new_account_url},
 * MAC'd with the decoded HMAC key. mac_alg is "HS256", "HS384" or "HS512".
 * hmac_key_b64url is the key as the CA hands it out (base64url). Returns a new
 * JSON object to place under "externalAccountBinding". */
json_t *at_eab_jws(EVP_PKEY *account_key, const char *eab_kid, const char *hmac_key_b64url,
                   const char *mac_alg, const char *new_account_url, at_error *err);

/* Verify a flattened JWS produced by at_jws_sign with the public part of key.
 * Used by tests and by the keyChange self-check. 1 = valid, 0 = invalid. */
int at_jws_verify(EVP_PKEY *key, const char *jws_json, size_t len);

/* Decode a flattened JWS without verifying it: the protected header (new
 * reference, if protected_hdr is non-NULL) and the payload bytes (appended to
 * payload, if non-NULL; nothing for POST-as-GET). For verifiers and tests. */
int at_jws_parse(const char *jws_json, size_t len, json_t **protected_hdr, at_buf *payload,
                 at_error *err);

#endif
