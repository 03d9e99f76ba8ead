#!/usr/bin/env bash
# The Debian 12 base image every chatq image is built from, made on this machine
# with debootstrap from the Debian mirror apt already uses, so that no container
# registry is needed. Does nothing when the image exists already.
#   scripts/docker-base.sh [image]          (default chatq-base:bookworm)
# Needs root (debootstrap), a running Docker engine and the debootstrap package
# (scripts/deps.sh compose).
set -euo pipefail

image=${1:-${CHATQ_BASE_IMAGE:-chatq-base:bookworm}}

if docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi

# The mirror of bookworm and of its security updates, as apt's sources name them
# (one-line "deb URI suite ..." or deb822 "URIs:" / "Suites:" stanzas).
apt_uri() { # suite
    { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } |
        awk -v suite="$1" '
            function has(list,   n, a, i) {
                n = split(list, a, /[ \t]+/)
                for (i = 1; i <= n; i++) if (a[i] == suite) return 1
                return 0
            }
            /^deb[ \t]/ {
                sub(/^deb[ \t]+(\[[^]]*\][ \t]+)?/, "")
                split($0, f, /[ \t]+/)
                if (f[2] == suite) { print f[1]; done = 1; exit }
                next
            }
            /^URIs:/    { sub(/^URIs:[ \t]*/, ""); split($0, u, /[ \t]+/); uri = u[1] }
            /^Suites:/  { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            /^[ \t]*$/  { if (uri != "" && has(suites)) { print uri; done = 1; exit } uri = ""; suites = "" }
            END         { if (!done && uri != "" && has(suites)) print uri }'
}
mirror=${CHATQ_DEBIAN_MIRROR:-$(apt_uri bookworm)}
mirror=${mirror:-http://deb.debian.org/debian}
security=$(apt_uri bookworm-security)
security=${security:-http://deb.debian.org/debian-security}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
root=$(mktemp -d /var/tmp/chatq-base.XXXXXX)
cleanup() { $sudo rm -rf "$root"; }
trap cleanup EXIT

echo "Making the Debian 12 base image $image with debootstrap from $mirror (once)"
$sudo debootstrap --variant=minbase bookworm "$root/fs" "$mirror" >"$root/debootstrap.log" 2>&1 ||
    { tail -20 "$root/debootstrap.log" >&2; exit 1; }

# apt inside the image: bookworm with its updates and security fixes, as on the
# host; no recommended packages, no documentation, and no package lists or .deb
# files kept in the image (each build runs apt-get update itself).
$sudo tee "$root/fs/etc/apt/sources.list" >/dev/null <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
$sudo tee "$root/fs/etc/apt/apt.conf.d/90chatq" >/dev/null <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
$sudo tee "$root/fs/etc/dpkg/dpkg.cfg.d/90chatq-nodoc" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
$sudo rm -rf "$root"/fs/var/cache/apt/archives/*.deb "$root"/fs/var/lib/apt/lists/* \
    "$root"/fs/usr/share/man/* "$root"/fs/usr/share/info/* "$root"/fs/usr/share/locale/*
$sudo find "$root/fs/usr/share/doc" -mindepth 1 -not -name copyright -type f -delete

$sudo tar -C "$root/fs" --numeric-owner -c . |
    docker import --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase bookworm $mirror" - "$image" >/dev/null
echo "Made $image"
