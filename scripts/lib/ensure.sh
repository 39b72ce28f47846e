# Sourced by scripts/*: installs what wasup's scripts need when it is missing.
# Debian packages are installed with apt-get (as root, or through sudo when available).

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "wasup: need root to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# A Rust toolchain (cargo) and a C compiler for crates that build C.
ensure_rust() {
  if ! command -v cc >/dev/null 2>&1; then
    apt_install gcc libc6-dev
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "wasup: installing Debian's cargo (a rustup toolchain, 1.85 or newer, is recommended)" >&2
    apt_install cargo
  fi
}

# redis-server, for the black-box tests (they start private instances on loopback).
ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
  fi
}
