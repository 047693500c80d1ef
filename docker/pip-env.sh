#!/bin/sh
# Run a command (pip) with the site additions of docker/extra/ (copied to /tmp/extra in the
# image's build stage): extra CA certificates, a wheelhouse, a pip.conf. Used by the Dockerfile.
set -eu
extra="${MCEPL_EXTRA:-/tmp/extra}"
certs=$(find "$extra/certs" -maxdepth 1 -type f \( -name '*.crt' -o -name '*.pem' \) 2>/dev/null | sort)
if [ -n "$certs" ]; then
  # Trust the extra CAs on top of the usual ones: the system bundle, else pip's own (certifi).
  base=/etc/ssl/certs/ca-certificates.crt
  [ -f "$base" ] || base=$("${PIP_PYTHON:-/opt/mcepl/bin/python}" -c \
    "import pip._vendor.certifi as c; print(c.where())")
  bundle=$(mktemp "${TMPDIR:-/tmp}/mcepl-ca-bundle.XXXXXX")
  # shellcheck disable=SC2086
  cat "$base" $certs > "$bundle"
  export PIP_CERT="$bundle" SSL_CERT_FILE="$bundle" REQUESTS_CA_BUNDLE="$bundle"
  echo "pip-env: trusting $(echo "$certs" | wc -l) extra CA file(s) from $extra/certs"
fi
if [ -f "$extra/pip.conf" ]; then
  export PIP_CONFIG_FILE="$extra/pip.conf"
  echo "pip-env: pip configuration $extra/pip.conf"
fi
if ls "$extra"/wheels/*.whl >/dev/null 2>&1; then
  export PIP_FIND_LINKS="$extra/wheels"
  echo "pip-env: wheelhouse $extra/wheels ($(ls "$extra"/wheels/*.whl | wc -l) wheel(s))"
fi
exec "$@"
