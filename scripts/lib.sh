# Shared install steps for scripts/start and scripts/test (sourced, not run).

install_debian_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "Installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_python_env() {
    local extra="$1"
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    echo "Installing Python packages into .venv"
    # compat: the checkout goes on sys.path through a plain .pth line; the default editable
    # finder costs each CLI call ~10 ms of imports before it runs.
    .venv/bin/pip install -q --disable-pip-version-check -e ".[$extra]" \
        --config-settings editable_mode=compat
    # The project is installed in place (editable): compile its bytecode now, as pip does for
    # the packages it installs, so no CLI call compiles modules at start-up (with
    # PYTHONDONTWRITEBYTECODE set, or a checkout it may not write to, it would on every call).
    .venv/bin/python -m compileall -q -j 0 teleport >/dev/null
}
