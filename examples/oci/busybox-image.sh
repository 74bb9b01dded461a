#!/bin/sh
# Builds a container image from this machine's busybox (Debian's busybox-static: one static
# binary, no registry, no internet) as an OCI image layout that `shoal push` and `image:
# file://...` take:
#
#   sh examples/oci/busybox-image.sh            # writes examples/busybox-oci
#   sh examples/oci/busybox-image.sh OUT_DIR
#
# The image is one uncompressed layer: /bin/busybox and a link for each of its applets, for
# this machine's architecture. Its command is `sh`.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../busybox-oci}
busybox=${BUSYBOX:-/bin/busybox}

if ! "$busybox" --list >/dev/null 2>&1; then
    echo "busybox-image.sh: no busybox at $busybox (apt-get install busybox-static, or set BUSYBOX)" >&2
    exit 1
fi
case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    armv7l | armv6l) arch=arm ;;
    *) echo "busybox-image.sh: unknown architecture $(uname -m)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp"
cp "$busybox" "$work/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
done
tar -C "$work/rootfs" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$work/layer.tar" .

rm -rf "$out"
mkdir -p "$out/blobs/sha256"
# Stores a file as a blob; prints "DIGEST SIZE".
blob() {
    digest=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$out/blobs/sha256/$digest"
    echo "$digest $(wc -c <"$1" | tr -d ' ')"
}
set -- $(blob "$work/layer.tar")
layer=$1 layer_size=$2
printf '{"architecture":"%s","os":"linux","config":{"Cmd":["sh"],"Env":["PATH=/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$layer" >"$work/config.json"
set -- $(blob "$work/config.json")
config=$1 config_size=$2
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
set -- $(blob "$work/manifest.json")
manifest=$1 manifest_size=$2
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"busybox"}}]}' \
    "$manifest" "$manifest_size" "$arch" >"$out/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
echo "busybox image for linux/$arch in $out"
