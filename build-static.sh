#!/bin/sh
# Builds fully static shoal binaries (musl) for the devices, on an ordinary Linux machine with no
# Docker: zig is the C compiler and linker for every target (ring's crypto, wasmtime's few C
# helpers, musl itself), through cargo-zigbuild.
#
#   ./build-static.sh                                  # aarch64, armv7 and x86_64, release, both flavours
#   ./build-static.sh armv7-unknown-linux-musleabihf   # one target
#   ./build-static.sh --flavour agent TARGET           # one flavour: full or agent
#   ./build-static.sh --debug TARGET -- --config ...   # a debug build, extra cargo arguments
#
# Two flavours: `full` (controller, agent and client: `shoal up` on a Pi) and `agent` (cargo's
# --no-default-features: no controller, no wasm compiler; the agent runs the code its
# controller precompiles for it, and is what a device in a fleet needs).
#
# Needs: zig (`pip install ziglang`, or zig on PATH) and `cargo install cargo-zigbuild --locked`.
# Where rustup has no standard library for a target (this project's build machine has none for
# armv7-unknown-linux-musleabihf or x86_64-unknown-linux-musl), the standard library is built
# from source, which needs `rustup component add rust-src` and uses cargo's build-std on the
# stable toolchain (RUSTC_BOOTSTRAP); the binary is the same. The agent flavour's release build
# always builds it so, aborting on panic with no unwind tables (Cargo.toml's `agent` profile):
# it needs rust-src on every target.
#
# Each binary lands in target/TARGET/release/shoal (or debug/), statically linked: nothing to
# install on the device. A release build is copied to dist/shoal-ARCH (full) or
# dist/shoal-agent-ARCH (agent), ARCH one of x86_64, aarch64, armv7, beside
# install.sh and a SHA256SUMS file it checks: copy dist/ to a device and run
# `sudo ./install.sh agent --server HOST:PORT --token-file FILE` there.
set -eu

profile=release
flavours="agent full"
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) profile=debug ;;
        --flavour)
            case "${2:-}" in
                full | agent) flavours=$2 ;;
                *) echo "--flavour: full or agent" >&2; exit 2 ;;
            esac
            shift
            ;;
        *) break ;;
    esac
    shift
done
targets=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    targets="$targets $1"
    shift
done
[ "${1:-}" = "--" ] && shift
[ -n "$targets" ] || targets="aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf x86_64-unknown-linux-musl"

cd "$(dirname "$0")"

missing=""
if ! command -v zig >/dev/null 2>&1 && ! python3 -c 'import ziglang' >/dev/null 2>&1; then
    missing="$missing; zig (pip install ziglang)"
fi
if ! command -v cargo-zigbuild >/dev/null 2>&1; then
    missing="$missing; cargo install cargo-zigbuild --locked"
fi
sysroot=$(rustc --print sysroot)
for t in $targets; do
    if [ ! -d "$sysroot/lib/rustlib/$t" ] && [ ! -d "$sysroot/lib/rustlib/src/rust/library" ]; then
        missing="$missing; rustup target add $t (or rustup component add rust-src)"
    fi
done
case " $flavours " in
    *" agent "*)
        if [ "$profile" = release ] && [ ! -d "$sysroot/lib/rustlib/src/rust/library" ]; then
            missing="$missing; rustup component add rust-src (the agent flavour's standard library)"
        fi
        ;;
esac
if [ -n "$missing" ]; then
    echo "build-static.sh needs:${missing#;}" >&2
    exit 3
fi

release=""
[ "$profile" = release ] && release="--release"
for t in $targets; do
    case "$t" in
        aarch64-*) arch=aarch64 ;;
        armv7-*) arch=armv7 ;;
        x86_64-*) arch=x86_64 ;;
        *) arch="" ;;
    esac
    for flavour in $flavours; do
        features=""
        name=shoal-$arch
        build=$release
        dir=$profile
        rustflags=${RUSTFLAGS:-}
        if [ "$flavour" = agent ]; then
            features=--no-default-features
            name=shoal-agent-$arch
            # Cargo.toml's `agent` profile (optimised for size), and no position-independent
            # code: a static PIE carries a relocation table that costs the device 2 MB of
            # flash and of memory at every start (see Cargo.toml).
            if [ "$profile" = release ]; then
                build="--profile agent"
                dir=agent
            fi
            rustflags="$rustflags -C relocation-model=static"
            # The profile aborts on panic; so does a standard library built for it, with no
            # unwind tables anywhere (see Cargo.toml). Needs rust-src.
            [ "$profile" = release ] && rustflags="$rustflags -C force-unwind-tables=no"
        fi
        std=std,panic_unwind
        [ "$dir" = agent ] && std=std,panic_abort
        echo "building shoal ($flavour) for $t ($dir)" >&2
        if [ "$dir" = agent ] && [ -d "$sysroot/lib/rustlib/$t" ]; then
            # shellcheck disable=SC2086
            RUSTFLAGS=$rustflags RUSTC_BOOTSTRAP=1 cargo zigbuild $build $features --target "$t" --bin shoal \
                -Zbuild-std=$std "$@"
        elif [ -d "$sysroot/lib/rustlib/$t" ]; then
            # shellcheck disable=SC2086
            RUSTFLAGS=$rustflags cargo zigbuild $build $features --target "$t" --bin shoal "$@"
        else
            # No prebuilt standard library: build it from rust-src. zig brings musl's start
            # files and libc, so rustc must not look for its own (self-contained) copies.
            # shellcheck disable=SC2086
            RUSTFLAGS=$rustflags RUSTC_BOOTSTRAP=1 cargo-zigbuild rustc $build $features --target "$t" --bin shoal \
                -Zbuild-std=$std "$@" -- -C link-self-contained=no
        fi
        out=${CARGO_TARGET_DIR:-target}/$t/$dir/shoal
        echo "$out ($flavour)" >&2
        # The flavours share cargo's output path: each is copied out before the next. dist/
        # holds release builds only.
        [ -n "$arch" ] && [ "$profile" = release ] || continue
        mkdir -p dist
        cp "$out" "dist/$name.new"
        mv -f "dist/$name.new" "dist/$name"
    done
done
[ "$profile" = release ] || exit 0
cp install.sh dist/install.sh
(cd dist && sha256sum shoal-* >SHA256SUMS)
echo "dist/: $(cd dist && ls shoal-* | tr '\n' ' ')with SHA256SUMS and install.sh" >&2
