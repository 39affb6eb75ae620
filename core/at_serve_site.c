/*
 * at_serve_site.c: a managed site's certificate callback, the same for every
 * host (see at_serve_site in at_serve.h).
 */
#include "at_serve.h"
#include "at_site.h"

#include <stdio.h>
#include <string.h>

int at_serve_site(at_serve *s, SSL *ssl, const char *const *names, size_t nnames,
                  char *host, size_t hostsz, int *acme)
{
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char lower[256];
    const char *name;

    at_name_lower(lower, sizeof(lower), sni, sni ? strlen(sni) : 0);
    *acme = at_serve_is_acme(ssl);
    if (*acme) {
        snprintf(host, hostsz, "%s", lower);
        return lower[0] ? at_serve_install_alpn01(s, ssl, lower) : 0;
    }
    name = at_site_name_for(names, nnames, lower);
    snprintf(host, hostsz, "%s", name);
    return at_serve_install(s, ssl, name);
}
