/*
 * at_acme_dir.c: the directory object (RFC 8555 §7.1.1), including meta
 * (termsOfService, website, externalAccountRequired) and the profiles
 * extension (draft-aaron-acme-profiles: meta.profiles = {name: description}).
 */
#include "at_acme_int.h"

#include <stdlib.h>
#include <string.h>

void at_acme_dir_free(at_acme_dir *dir)
{
    if (!dir)
        return;
    free(dir->url);
    free(dir->new_nonce);
    free(dir->new_account);
    free(dir->new_order);
    free(dir->new_authz);
    free(dir->revoke_cert);
    free(dir->key_change);
    free(dir->renewal_info);
    free(dir->terms_of_service);
    free(dir->website);
    for (size_t i = 0; i < dir->nprofiles; i++) {
        free(dir->profiles[i].name);
        free(dir->profiles[i].description);
    }
    free(dir->profiles);
    memset(dir, 0, sizeof(*dir));
}

/* An optional URL member, resolved against the directory URL. A member of
 * the wrong type counts as absent. Returns -1 on OOM only. */
static int get_url(const json_t *obj, const char *key, const char *base, char **out)
{
    const char *s = at_json_str(obj, key);
    *out = NULL;
    if (!s || !*s)
        return 0;
    *out = at_http_resolve(base, s);
    return *out ? 0 : -1;
}

static int parse_profiles(at_acme_dir *dir, const json_t *profiles, at_error *err)
{
    const char *name;
    json_t *v;
    size_t n = json_object_size(profiles), i = 0;

    if (!json_is_object(profiles) || n == 0)
        return 0;
    if (n > AT_ACME_MAX_PROFILES)
        n = AT_ACME_MAX_PROFILES;   /* more would be absurd; keep the first ones */
    dir->profiles = calloc(n, sizeof(*dir->profiles));
    if (!dir->profiles)
        return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    json_object_foreach((json_t *)profiles, name, v) {
        if (i >= n)
            break;
        dir->profiles[i].name = strdup(name);
        dir->profiles[i].description = strdup(json_is_string(v) ? json_string_value(v) : "");
        dir->nprofiles = ++i;
        if (!dir->profiles[i - 1].name || !dir->profiles[i - 1].description)
            return at_error_set(err, AT_ERR_INTERNAL, "out of memory");
    }
    return 0;
}

int at_acme_dir_parse(at_acme_dir *dir, const char *url, const at_http_resp *resp, at_error *err)
{
    json_t *j, *meta;
    char what[600];
    const char *missing[3];
    size_t nmissing = 0;
    int rv = -1;

    memset(dir, 0, sizeof(*dir));
    snprintf(what, sizeof(what), "the ACME directory at %s", url ? url : "(unknown URL)");
    if (!resp)
        return at_error_set(err, AT_ERR_INTERNAL, "%s: no response", what);
    if (resp->status != 200)
        return at_error_set(err, AT_ERR_PROTOCOL,
                            "%s answered HTTP %ld instead of the directory; check the CA URL", what,
                            resp->status);
    j = at_json_parse_object(resp->body ? resp->body : "", resp->body_len, what, err);
    if (!j) {
        char m[AT_ERROR_MSG_MAX - 64];
        snprintf(m, sizeof(m), "%.900s", err ? err->msg : "");
        return at_error_set(err, AT_ERR_PROTOCOL, "%s (is the CA URL really its ACME directory URL?)", m);
    }

    if (!(dir->url = strdup(url ? url : "")) ||
        get_url(j, "newNonce", url, &dir->new_nonce) != 0 ||
        get_url(j, "newAccount", url, &dir->new_account) != 0 ||
        get_url(j, "newOrder", url, &dir->new_order) != 0 ||
        get_url(j, "newAuthz", url, &dir->new_authz) != 0 ||
        get_url(j, "revokeCert", url, &dir->revoke_cert) != 0 ||
        get_url(j, "keyChange", url, &dir->key_change) != 0 ||
        get_url(j, "renewalInfo", url, &dir->renewal_info) != 0) {
        at_error_set(err, AT_ERR_INTERNAL, "out of memory");
        goto out;
    }
    if (!dir->new_nonce)
        missing[nmissing++] = "newNonce";
    if (!dir->new_account)
        missing[nmissing++] = "newAccount";
    if (!dir->new_order)
        missing[nmissing++] = "newOrder";
    if (nmissing) {
        at_error_set(err, AT_ERR_PROTOCOL,
                     "%s lacks %s%s%s%s%s: this is not an RFC 8555 ACME directory; check the CA URL",
                     what, missing[0],
                     nmissing > 1 ? (nmissing > 2 ? ", " : " and ") : "", nmissing > 1 ? missing[1] : "",
                     nmissing > 2 ? " and " : "", nmissing > 2 ? missing[2] : "");
        goto out;
    }

    meta = json_object_get(j, "meta");
    if (json_is_object(meta)) {
        if (get_url(meta, "termsOfService", url, &dir->terms_of_service) != 0 ||
            get_url(meta, "website", url, &dir->website) != 0) {
            at_error_set(err, AT_ERR_INTERNAL, "out of memory");
            goto out;
        }
        dir->external_account_required = at_json_bool(meta, "externalAccountRequired");
        if (parse_profiles(dir, json_object_get(meta, "profiles"), err) != 0)
            goto out;
    }
    rv = 0;
out:
    json_decref(j);
    if (rv != 0)
        at_acme_dir_free(dir);
    return rv;
}

int at_acme_dir_has_profile(const at_acme_dir *dir, const char *name)
{
    if (!dir || !name)
        return 0;
    for (size_t i = 0; i < dir->nprofiles; i++)
        if (strcmp(dir->profiles[i].name, name) == 0)
            return 1;
    return 0;
}
