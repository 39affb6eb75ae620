#!/bin/bash
# Build ngx_http_autotls_module.so against an nginx source tree, for the
# nginx binary that tree describes (Debian: nginx-dev's /usr/share/nginx/src,
# whose conf_flags are the flags Debian's nginx was configured with, so the
# module's signature and structure layouts match and load_module accepts it).
#
#   build.sh NGINX_SRC MODULE_DIR WORK_DIR CORE_INC CORE_LIB OUT
#
# NGINX_SRC is never written to: it is copied into WORK_DIR/nginx-src,
# configured there once (again when the flags or the module's config change)
# and only `make modules` runs on later builds.
#
# The configure flags come from NGINX_CONFIGURE_FLAGS if set, else the
# tree's conf_flags (Debian), else `nginx -V` of an installed nginx of the
# same version, else a minimal --with-compat set.
#
# Environment: CC; MAKE; AUTOTLS_CFLAGS (added to nginx's own CFLAGS for the
# module's files: warnings, sanitizers); AUTOTLS_LDFLAGS; AUTOTLS_LIBS (the
# core's libraries); NGINX_CONFIGURE_FLAGS.
set -eu

if [ $# -ne 6 ]; then
    echo "usage: $0 NGINX_SRC MODULE_DIR WORK_DIR CORE_INC CORE_LIB OUT" >&2
    exit 2
fi
src=$1 moddir=$(cd "$2" && pwd) work=$3 coreinc=$(cd "$4" && pwd) corelib=$5 out=$6
cc=${CC:-cc}

case $corelib in /*) ;; *) corelib=$(pwd)/$corelib ;; esac
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
mkdir -p "$work"
work=$(cd "$work" && pwd)
tree=$work/nginx-src

if [ ! -f "$src/configure" ]; then
    echo "$0: $src is not an nginx source tree (no configure); install nginx-dev" >&2
    exit 1
fi

# The configure arguments of an installed nginx of the tree's version,
# without the third-party and dynamic modules whose sources are not here.
installed_flags() {
    local bin want have args a
    bin=$(command -v nginx 2>/dev/null || true)
    [ -x "$bin" ] || bin=/usr/sbin/nginx
    [ -x "$bin" ] || return 1
    want=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h")
    have=$("$bin" -v 2>&1 | sed -n 's#^nginx version: nginx/##p')
    [ -n "$want" ] && [ "$want" = "$have" ] || return 1
    args=$("$bin" -V 2>&1 | sed -n 's/^configure arguments: //p')
    eval "set -- $args"
    flags=()
    for a in "$@"; do
        case $a in
            --add-module=*|--add-dynamic-module=*|--with-*=dynamic) ;;
            *) flags+=("$a") ;;
        esac
    done
}

# The flags of the nginx binary the module is for.
if [ -n "${NGINX_CONFIGURE_FLAGS:-}" ]; then
    read -r -a flags <<< "$NGINX_CONFIGURE_FLAGS"
elif [ -f "$src/conf_flags" ]; then
    # shellcheck disable=SC1091
    . "$src/conf_flags"
    flags=("${NGX_CONF_FLAGS[@]}")
elif ! installed_flags; then
    flags=(--with-compat --with-threads --with-http_ssl_module --with-http_v2_module)
fi
case " ${flags[*]} " in
    *" --with-compat "*) ;;
    *) flags+=(--with-compat) ;;
esac

# A fresh copy when the source tree changed (a new nginx-dev).
if [ ! -f "$tree/configure" ] || [ "$src/configure" -nt "$tree/configure" ] \
   || [ "$src/src/core/nginx.h" -nt "$tree/src/core/nginx.h" ]; then
    rm -rf "$tree"
    mkdir -p "$tree"
    cp -R "$src/." "$tree/"
    chmod -R u+w "$tree"
fi

want="${flags[*]} --add-dynamic-module=$moddir core=$coreinc lib=$corelib libs=${AUTOTLS_LIBS:-}"
stamp=$tree/.autotls-configure
if [ ! -f "$tree/objs/Makefile" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
   || [ "$moddir/config" -nt "$stamp" ]; then
    echo "  NGINX    configure ($src)"
    if ! (cd "$tree" && CC="$cc" AUTOTLS_CORE_DIR="$coreinc" AUTOTLS_CORE_LIB="$corelib" \
            AUTOTLS_LIBS="${AUTOTLS_LIBS:-}" \
            ./configure "${flags[@]}" --add-dynamic-module="$moddir") > "$work/configure.log" 2>&1; then
        tail -n 30 "$work/configure.log" >&2
        echo "$0: nginx's configure failed; the whole log is $work/configure.log" >&2
        exit 1
    fi
    printf '%s' "$want" > "$stamp"
fi

ngx_cflags=$(sed -n 's/^CFLAGS = *//p' "$tree/objs/Makefile")
# The core may have changed: always relink.
rm -f "$tree/objs/ngx_http_autotls_module.so"
${MAKE:-make} -s -C "$tree" -f objs/Makefile modules CC="$cc" \
    CFLAGS="$ngx_cflags ${AUTOTLS_CFLAGS:-}" \
    LINK="$cc ${AUTOTLS_LDFLAGS:-} -Wl,-z,relro -Wl,-z,now -Wl,--no-undefined-version -Wl,--version-script=$moddir/ngx_http_autotls_module.map"
cp "$tree/objs/ngx_http_autotls_module.so" "$out.tmp"
mv -f "$out.tmp" "$out"
