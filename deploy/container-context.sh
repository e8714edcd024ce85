#!/usr/bin/env bash
# Lay out the build context of deploy/Containerfile (FROM scratch) in DIR:
#
#   deploy/container-context.sh BINARY DIR
#
#   DIR/orinari                          the binary
#   DIR/libs/<path>                      each library `ldd BINARY` resolves, and
#                                        the dynamic loader, at its own path
#   DIR/ca-certificates.crt              this machine's CA bundle (ca-certificates)
#   DIR/nsswitch.conf                    hosts: files dns
#   DIR/zoneinfo/                        this machine's /usr/share/zoneinfo (tzdata)
#   DIR/SmolLM2-135M-Instruct.Q4_1.gguf  the embedded model (scripts/fetch-model.sh)
#   DIR/orinari.toml                     the image's default configuration
#   DIR/dirs/tmp, DIR/dirs/var/lib       mount points' parents (/tmp is 1777)
#   DIR/empty/                           an empty folder (/var/lib/orinari)
#
# Prints the files it copied. A statically linked binary needs no libs/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:?usage: container-context.sh BINARY DIR}"
dir="${2:?usage: container-context.sh BINARY DIR}"
[[ -x "$bin" ]] || { echo "container-context: no binary at $bin" >&2; exit 2; }
rm -rf "$dir"
mkdir -p "$dir/libs" "$dir/empty" "$dir/dirs/tmp" "$dir/dirs/var/lib"
chmod 1777 "$dir/dirs/tmp"
chmod 0755 "$dir/dirs/var" "$dir/dirs/var/lib"
cp "$bin" "$dir/orinari"

# The shared libraries: `ldd` prints `name => /path (addr)` for each library and
# `/path (addr)` for the loader; `statically linked` or `not a dynamic
# executable` when there are none.
if ldd "$bin" >/dev/null 2>&1; then
    ldd "$bin" | awk '/=> \// { print $3; next } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
        # Copy the file the path resolves to, under the path the binary asks for.
        install -D -m 0755 "$(readlink -f "$lib")" "$dir/libs$lib"
        echo "container-context: $lib" >&2
    done
else
    echo "container-context: $bin is statically linked: no libraries" >&2
fi

ca=/etc/ssl/certs/ca-certificates.crt
[[ -s "$ca" ]] || { echo "container-context: no CA bundle at $ca (apt-get install -y ca-certificates)" >&2; exit 2; }
cp "$ca" "$dir/ca-certificates.crt"
printf 'hosts: files dns\n' >"$dir/nsswitch.conf"
zones=/usr/share/zoneinfo
[[ -f "$zones/Etc/UTC" ]] || { echo "container-context: no time zone database at $zones (apt-get install -y tzdata)" >&2; exit 2; }
cp -a "$zones" "$dir/zoneinfo"
# The host's own zone (a link to /etc/localtime) means nothing in the image.
rm -f "$dir/zoneinfo/localtime"
cp "$("$root/scripts/fetch-model.sh")" "$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
cat >"$dir/orinari.toml" <<'TOML'
# The container image's default configuration (deploy/Containerfile).
# Every key not set here has its documented default (orinari.example.toml);
# ORINARI_<SECTION>_<KEY> environment variables override any of them.
[server]
listen = "0.0.0.0:8080"

[storage]
# Relative to the working directory, /var/lib/orinari: mount a volume there.
url = "sqlite://orinari-data/orinari.db"
TOML
echo "container-context: $dir ready ($(du -sh "$dir" | cut -f1))" >&2
