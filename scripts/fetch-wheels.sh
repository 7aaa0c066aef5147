#!/usr/bin/env bash
# Fetch the Python wheels of the bundle's own images into the local cache, on the
# HOST (which reaches PyPI), so that the image builds run offline:
#
#   airflow    optasia/airflow     lock roles/airflow/files/airflow/requirements.lock
#                                  (the `airflow` extra of pyproject.toml)
#   sparkjob   optasia/spark-job   lock roles/airflow/files/spark-job/requirements.lock
#                                  (the `spark` extra of pyproject.toml)
#
# into $OPTASIA_CACHE/wheels/<target>/:
#   *.whl              exactly the wheels of the lock, nothing else (stale ones are removed)
#   requirements.txt   install manifest: name==version --hash=<sha256 of the cached wheel>,
#                      used inside the image as
#                      pip install --no-index --find-links /wheels --require-hashes -r requirements.txt
#   .complete          SHA-256 of the lock the folder was filled from: a rerun is instant
#
# The lock files are resolved for the IMAGE's interpreter, Debian 12's python3
# (python_full_version 3.11.2, CPython, x86_64, glibc 2.36), never for the host's:
# requirements carry markers on the full version (redis needs async-timeout
# only below 3.11.3), and pip evaluates markers against the interpreter it runs
# on even with --python-version (pypa/pip#11010), so a host-side `pip download`
# of the top-level pins misses wheels. The lock is made with uv
# (`uv pip compile --python-version 3.11.2 --python-platform x86_64-manylinux_2_36`),
# which evaluates markers for the target, and lists every package with its
# hashes; this script then downloads exactly that with pip (--no-deps
# --require-hashes --only-binary=:all: for cp311/manylinux_2_36_x86_64).
#
# Packages published as sdist only (pyspark: pure Python + jars) are downloaded
# as the locked sdist (hash-checked) and built into a wheel here with
# `pip wheel`; the build must yield a pure (*-none-any) wheel.
#
# Usage:
#   scripts/fetch-wheels.sh [options] airflow|sparkjob|all ...
#     (no option)   fill the cache from the lock files; progress on stderr,
#                   one line per target on stdout: WHEELS_<TARGET>=<dir>
#     --check       no network: exit 0 if every target's cache is complete, 1 if not
#     --force       download and build again even if the cache is complete
#     --lock        first (re)resolve the lock file(s) from pyproject.toml for the
#                   image's interpreter; pins already in a lock are kept where
#                   possible (needs PyPI; installs the pinned uv of the `lock`
#                   extra into $OPTASIA_CACHE/tools/)
#     --upgrade     with --lock: re-resolve from scratch (newest allowed versions)
# Environment: OPTASIA_HOME (/opt/optasia), OPTASIA_CACHE ($OPTASIA_HOME/cache),
#   PIP_CACHE_DIR ($OPTASIA_CACHE/pip), PIP_INDEX_URL (a mirror; also used for
#   uv), PYTHON (python3: the host interpreter that runs pip and uv),
#   LOCK_PYTHON_VERSION (3.11.2), https_proxy/no_proxy, PIP_CERT / SSL_CERT_FILE
#   (a site CA bundle behind a TLS-intercepting proxy).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OPTASIA_CACHE="${OPTASIA_CACHE:-${OPTASIA_HOME:-/opt/optasia}/cache}"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$OPTASIA_CACHE/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
PYTHON="${PYTHON:-python3}"

# The image's interpreter and platform: Debian 12 (bookworm) python3, glibc 2.36.
LOCK_PYTHON_VERSION="${LOCK_PYTHON_VERSION:-3.11.2}"
LOCK_ABI="cp$(cut -d. -f1,2 <<<"$LOCK_PYTHON_VERSION" | tr -d .)"
UV_PLATFORM=x86_64-manylinux_2_36
PIP_PLATFORM=manylinux_2_36_x86_64
# pip takes --platform literally (no older manylinux tags implied): list them all.
PIP_PLATFORM_ARGS=()
for v in $(seq 36 -1 5); do PIP_PLATFORM_ARGS+=(--platform "manylinux_2_${v}_x86_64"); done
PIP_PLATFORM_ARGS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64)

say() { printf 'fetch-wheels: %s\n' "$*" >&2; }
die() {
    printf 'fetch-wheels: ERROR: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf 'fetch-wheels:   %s\n' "$line" >&2; done
    exit 1
}

MODE=fetch
FORCE=0
LOCK=0
UPGRADE=0
TARGETS=()
for arg in "$@"; do
    case "$arg" in
        --check) MODE=check ;;
        --force) FORCE=1 ;;
        --lock) LOCK=1 ;;
        --upgrade) UPGRADE=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        all) TARGETS+=(airflow sparkjob) ;;
        airflow|sparkjob) TARGETS+=("$arg") ;;
        *) die "unknown argument: $arg" "targets: airflow, sparkjob, all; run '$0 --help' for the options" ;;
    esac
done
[ "${#TARGETS[@]}" -gt 0 ] || die "no target given" "usage: $0 [--check|--force|--lock] airflow|sparkjob|all ..."
[ "$UPGRADE" = 0 ] || [ "$LOCK" = 1 ] || die "--upgrade only goes with --lock"

# target -> extra of pyproject.toml, lock file, packages built here from their sdist
target_extra() { case "$1" in airflow) echo airflow ;; sparkjob) echo spark ;; esac; }
target_lock() {
    case "$1" in
        airflow) echo "$REPO_ROOT/roles/airflow/files/airflow/requirements.lock" ;;
        sparkjob) echo "$REPO_ROOT/roles/airflow/files/spark-job/requirements.lock" ;;
    esac
}
target_sdists() { case "$1" in airflow) echo "hdfs docopt" ;; sparkjob) echo "pyspark" ;; esac; }
target_dir() { echo "$OPTASIA_CACHE/wheels/$1"; }

complete_ok() {  # target: marker matches the lock and every manifest file is there
    local t="$1" dir lock f
    dir="$(target_dir "$t")"; lock="$(target_lock "$t")"
    [ -f "$lock" ] && [ -f "$dir/.complete" ] && [ -f "$dir/requirements.txt" ] || return 1
    [ "$(cat "$dir/.complete")" = "$(sha256sum <"$lock" | cut -d' ' -f1)" ] || return 1
    while read -r f; do
        [ -s "$dir/$f" ] || return 1
    done < <(sed -n 's/.*# file: //p' "$dir/requirements.txt")
}

if [ "$MODE" = check ]; then
    rc=0
    for t in "${TARGETS[@]}"; do
        if complete_ok "$t"; then say "[$t] complete: $(target_dir "$t")"
        else say "[$t] missing or stale: $(target_dir "$t") (run scripts/fetch-wheels.sh $t)"; rc=1; fi
    done
    exit "$rc"
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "no host Python ('$PYTHON') found" "install python3 (and python3-venv), or set PYTHON=/path/to/python3"
if ! { mkdir -p "$OPTASIA_CACHE/wheels" 2>/dev/null && [ -w "$OPTASIA_CACHE/wheels" ]; }; then
    die "cannot write to $OPTASIA_CACHE/wheels" \
        "run as a user that may write there, or set OPTASIA_CACHE (or OPTASIA_HOME) to a writable directory"
fi
# pip: the interpreter's own, else (Debian's python3 comes without pip) a venv of ours.
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    PIP_VENV="$OPTASIA_CACHE/tools/pip-venv"
    if ! "$PIP_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        say "'$PYTHON -m pip' does not work: creating $PIP_VENV for pip"
        rm -rf "$PIP_VENV"
        "$PYTHON" -m venv "$PIP_VENV" >&2 || die "'$PYTHON' has neither pip nor a working venv module" \
            "install them (Debian: apt-get install -y python3-venv), or set PYTHON=/path/to/python3 with pip"
    fi
    PYTHON="$PIP_VENV/bin/python"
fi

# One fetch at a time per cache (parallel builds, test sessions).
exec 9>"$OPTASIA_CACHE/.fetch-wheels.lock"
if ! flock -n 9; then
    say "another fetch-wheels run is using $OPTASIA_CACHE; waiting for it"
    flock 9
fi

WORK="$(mktemp -d "$OPTASIA_CACHE/.fetch-wheels.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Run a command with its output in a log; on failure show the tail and die.
run_logged() {  # log "what" hint -- cmd...
    local log="$1" what="$2" hint="$3"; shift 4
    if ! "$@" >>"$log" 2>&1; then
        printf 'fetch-wheels: ---- last lines of the output (full log: %s) ----\n' "$log" >&2
        tail -n 25 "$log" | awk '{print "fetch-wheels:   | " $0}' >&2
        die "$what failed" "$hint"
    fi
}

# --- lock: resolve for the image's interpreter with uv -------------------------
ensure_uv() {
    local ver venv
    ver="$(sed -n 's/^ *"uv==\([^"]*\)".*/\1/p' "$REPO_ROOT/pyproject.toml" | head -n1)"
    [ -n "$ver" ] || die "no uv pin (\"uv==X\") in the lock extra of $REPO_ROOT/pyproject.toml"
    venv="$OPTASIA_CACHE/tools/uv-$ver"
    if [ ! -x "$venv/bin/uv" ]; then
        say "installing uv $ver (the lock resolver) into $venv"
        rm -rf "$venv"
        run_logged "$WORK/uv-install.log" "installing uv $ver" \
            "check that PyPI is reachable (https_proxy, PIP_INDEX_URL), then rerun" -- \
            "$PYTHON" -m venv "$venv"
        run_logged "$WORK/uv-install.log" "installing uv $ver" \
            "check that PyPI is reachable (https_proxy, PIP_INDEX_URL), then rerun" -- \
            "$venv/bin/pip" install -q "uv==$ver"
    fi
    UV="$venv/bin/uv"
}

lock_target() {
    local t="$1" extra lock sdists out t0=$SECONDS
    extra="$(target_extra "$t")"; lock="$(target_lock "$t")"; sdists="$(target_sdists "$t")"
    mkdir -p "$(dirname "$lock")"
    local -a args=(pip compile "$REPO_ROOT/pyproject.toml" --extra "$extra"
        --python-version "$LOCK_PYTHON_VERSION" --python-platform "$UV_PLATFORM"
        --only-binary :all: --generate-hashes --no-header --quiet -o "$WORK/lock.out")
    for p in $sdists; do args+=(--no-binary "$p"); done
    [ "$UPGRADE" = 1 ] && args+=(--upgrade)
    # Keep the existing pins where the new constraints allow them.
    [ "$UPGRADE" = 0 ] && [ -f "$lock" ] && sed -n '/^# ---- resolved ----$/,$p' "$lock" | tail -n +2 >"$WORK/lock.out"
    say "[$t] resolving the '$extra' extra of pyproject.toml for python $LOCK_PYTHON_VERSION ($UV_PLATFORM)"
    [ -n "${PIP_INDEX_URL:-}" ] && [ -z "${UV_DEFAULT_INDEX:-}" ] && export UV_DEFAULT_INDEX="$PIP_INDEX_URL"
    (cd "$REPO_ROOT" && UV_CACHE_DIR="${UV_CACHE_DIR:-$OPTASIA_CACHE/uv}" "$UV" "${args[@]}") >"$WORK/uv.log" 2>&1 || {
        sed 's/^/fetch-wheels:   | /' "$WORK/uv.log" >&2
        die "[$t] resolving the '$extra' extra failed (uv output above)" \
            "a pin in pyproject.toml without a wheel for cp311/manylinux_2_36 or conflicting pins; fix the extra and rerun"
    }
    out="$WORK/lock.new"
    {
        echo "# Lock file of the $t image: every Python package, pinned with its hashes,"
        echo "# resolved for the IMAGE's interpreter -- Debian 12's python3 (python_full_version"
        echo "# $LOCK_PYTHON_VERSION, $UV_PLATFORM) -- not for the host's. Generated from the"
        echo "# '$extra' extra of pyproject.toml by:  scripts/fetch-wheels.sh --lock $t"
        echo "# Do not edit by hand; scripts/fetch-wheels.sh $t downloads exactly this."
        echo "# optasia-lock: python=$LOCK_PYTHON_VERSION platform=$PIP_PLATFORM build-from-sdist=${sdists:-none}"
        echo "# ---- resolved ----"
        cat "$WORK/lock.out"
    } >"$out"
    if [ -f "$lock" ] && cmp -s "$out" "$lock"; then
        say "[$t] lock unchanged: ${lock#"$REPO_ROOT"/} ($(grep -c '^[a-z0-9]' "$lock") packages, $((SECONDS - t0)) s)"
    else
        mv "$out" "$lock"
        say "[$t] wrote ${lock#"$REPO_ROOT"/} ($(grep -c '^[a-z0-9]' "$lock") packages, $((SECONDS - t0)) s)"
    fi
}

# --- fetch --------------------------------------------------------------------
# Split a lock into the pip-downloadable part and the sdist builds; match files to it.
LOCK_TOOL='
import hashlib, json, os, re, sys

def parse(path):
    """name -> (version, [sha256...]) from a pip-style hashed requirements file."""
    text = open(path).read().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)(.*)$", line)
        if not m:
            sys.exit(f"unexpected line in {path}: {line!r} (expected name==version --hash=...)")
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group(4))
        if ";" in m.group(4):
            sys.exit(f"{path}: {name} carries an environment marker; the lock must be resolved "
                     "for one interpreter (scripts/fetch-wheels.sh --lock)")
        if not hashes:
            sys.exit(f"{path}: {name}=={m.group(3)} has no --hash (regenerate with --lock)")
        out[name] = (m.group(3), hashes)
    return out

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()

cmd, lock = sys.argv[1], sys.argv[2]
pkgs = parse(lock)
if cmd == "split":  # split LOCK SDISTS OUT_BINARY OUT_SDIST
    sdists = {re.sub(r"[-_.]+", "-", s).lower() for s in sys.argv[3].split()}
    with open(sys.argv[4], "w") as b, open(sys.argv[5], "w") as s:
        for name, (ver, hs) in sorted(pkgs.items()):
            line = f"{name}=={ver} " + " ".join(f"--hash=sha256:{h}" for h in hs) + "\n"
            (s if name in sdists else b).write(line)
    missing = sdists - set(pkgs)
    if missing:
        print("note: not in the lock (no build needed):", " ".join(sorted(missing)), file=sys.stderr)
elif cmd == "manifest":  # manifest LOCK DIR BUILT_JSON OUT
    d, built = sys.argv[3], json.load(open(sys.argv[4]))
    by_hash = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".whl"):
            by_hash.setdefault(sha256(os.path.join(d, f)), f)
    lines, errors, total = [], [], 0
    for name, (ver, hs) in sorted(pkgs.items()):
        if name in built:  # wheel built here from the locked sdist
            f = built[name]
            if not os.path.isfile(os.path.join(d, f)):
                errors.append(f"{name}=={ver}: built wheel {f} missing")
                continue
            h = sha256(os.path.join(d, f))
        else:
            found = [(h, by_hash[h]) for h in hs if h in by_hash]
            if not found:
                errors.append(f"{name}=={ver}: no downloaded wheel matches the locked hashes")
                continue
            h, f = found[0]
        total += os.path.getsize(os.path.join(d, f))
        lines.append(f"{name}=={ver} --hash=sha256:{h}  # file: {f}\n")
    if errors:
        sys.exit("\n".join(errors))
    with open(sys.argv[5], "w") as o:
        o.write("# Install manifest: the exact wheels of this folder (scripts/fetch-wheels.sh).\n")
        o.writelines(lines)
    print(f"{len(lines)} {total}")
'

fetch_target() {
    local t="$1" dir lock sdists log t0=$SECONDS name line
    dir="$(target_dir "$t")"; lock="$(target_lock "$t")"; sdists="$(target_sdists "$t")"
    [ -f "$lock" ] || die "[$t] no lock file ${lock#"$REPO_ROOT"/}" "create it: scripts/fetch-wheels.sh --lock $t"
    grep -q "^# optasia-lock: python=$LOCK_PYTHON_VERSION " "$lock" || die \
        "[$t] ${lock#"$REPO_ROOT"/} was not resolved for python $LOCK_PYTHON_VERSION" \
        "re-resolve it: scripts/fetch-wheels.sh --lock $t"
    if [ "$FORCE" = 0 ] && complete_ok "$t"; then
        say "[$t] up to date: $(sed -n '/# file: /p' "$dir/requirements.txt" | wc -l) wheels, $(du -sh "$dir" | cut -f1) in $dir"
        printf 'WHEELS_%s=%s\n' "${t^^}" "$dir"
        return 0
    fi
    mkdir -p "$dir/.built"
    rm -f "$dir/.complete"
    [ "$FORCE" = 1 ] && find "$dir" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' \) -delete && rm -f "$dir/.built/"*
    log="$dir/.fetch.log"
    : >"$log"
    "$PYTHON" -c "$LOCK_TOOL" split "$lock" "$sdists" "$WORK/$t.binary" "$WORK/$t.sdist" \
        || die "[$t] cannot read ${lock#"$REPO_ROOT"/} (see above)"

    say "[$t] downloading $(wc -l <"$WORK/$t.binary") locked wheels for cp311/$PIP_PLATFORM into $dir (pip cache: $PIP_CACHE_DIR) ..."
    # Progress: one line per package; wheels already in the folder are only re-checked.
    local rc
    set +e
    "$PYTHON" -m pip download --no-deps --require-hashes --only-binary=:all: \
        --implementation cp --python-version "$LOCK_PYTHON_VERSION" --abi "$LOCK_ABI" \
        "${PIP_PLATFORM_ARGS[@]}" --progress-bar off -d "$dir" -r "$WORK/$t.binary" 2>&1 \
        | tee -a "$log" \
        | sed -u -n -e "s#$dir/##" \
              -e "s/^  Downloading \(.*\)/fetch-wheels: [$t]   downloading \1/p" \
              -e "s/^File was already downloaded \(.*\)/fetch-wheels: [$t]   cached \1/p" >&2
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" != 0 ]; then
        printf 'fetch-wheels: ---- last lines of the pip output (full log: %s) ----\n' "$log" >&2
        tail -n 25 "$log" | awk '{print "fetch-wheels:   | " $0}' >&2
        if grep -q 'DO NOT MATCH THE HASHES' "$log"; then
            die "[$t] a downloaded file does not match the hash in the lock" \
                "an index/mirror serves different files than PyPI, or the download was corrupted;" \
                "retry, and if it persists check PIP_INDEX_URL / re-resolve: scripts/fetch-wheels.sh --lock $t"
        elif grep -q -E 'NewConnectionError|ConnectTimeout|ProxyError|SSLError|Max retries exceeded|Could not fetch URL|Failed to establish' "$log"; then
            die "[$t] the package index is not reachable from this host (see above)" \
                "check https_proxy / no_proxy, PIP_INDEX_URL (a mirror) and PIP_CERT (a site CA bundle), then rerun"
        elif grep -q -E 'No matching distribution|Could not find a version' "$log"; then
            die "[$t] pip found no wheel for $(sed -n 's/.*No matching distribution found for \(.*\)/\1/p' "$log" | head -n1) (cp311/$PIP_PLATFORM)" \
                "either the index is unreachable or incomplete (check https_proxy, PIP_INDEX_URL, PIP_CERT)," \
                "or the lock is stale or was edited by hand (re-resolve: scripts/fetch-wheels.sh --lock $t)"
        fi
        die "[$t] pip download failed" "check that PyPI is reachable from this host (https_proxy, PIP_INDEX_URL, PIP_CERT), then rerun"
    fi

    # sdist-only packages: download the locked sdist, build a pure wheel here.
    local built_json="{" sep=""
    while read -r line; do
        [ -n "$line" ] || continue
        name="${line%%==*}"
        local ver="${line#*==}"; ver="${ver%% *}"
        local stamp="$dir/.built/$name-$ver" want whl
        want="$(tr ' ' '\n' <<<"$line" | sed -n 's/^--hash=sha256://p' | sort | tr '\n' ' ')"
        whl=""
        if [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$want" ]; then
            whl="$(sed -n 2p "$stamp")"
            [ -s "$dir/$whl" ] || whl=""
        fi
        if [ -z "$whl" ]; then
            say "[$t]   building $name==$ver from its locked sdist (pure Python; pip wheel) ..."
            local b0=$SECONDS bdir="$WORK/build-$name"
            mkdir -p "$bdir"
            printf '%s\n' "$line" >"$bdir/req.txt"
            run_logged "$log" "[$t] building the $name==$ver wheel from its sdist" \
                "see the log; pip needs PyPI for the sdist and for setuptools (build isolation)" -- \
                "$PYTHON" -m pip wheel --no-deps --require-hashes --no-binary "$name" --progress-bar off \
                -w "$bdir/out" -r "$bdir/req.txt"
            whl="$(cd "$bdir/out" && ls -- *.whl)"
            case "$whl" in
                *-none-any.whl) ;;
                *) die "[$t] $name built a platform-specific wheel ($whl)" \
                       "only pure-Python sdists can be built on the host for the image; find a binary wheel instead" ;;
            esac
            mv -f "$bdir/out/$whl" "$dir/$whl"
            printf '%s\n%s\n' "$want" "$whl" >"$stamp"
            rm -rf "$bdir"
            say "[$t]   built $whl ($(du -h "$dir/$whl" | cut -f1), $((SECONDS - b0)) s)"
        else
            say "[$t]   $whl: built earlier from the locked sdist"
        fi
        built_json+="$sep\"$name\": \"$whl\""; sep=", "
    done <"$WORK/$t.sdist"
    built_json+="}"
    printf '%s\n' "$built_json" >"$WORK/$t.built.json"

    local summary n bytes f
    summary="$("$PYTHON" -c "$LOCK_TOOL" manifest "$lock" "$dir" "$WORK/$t.built.json" "$WORK/$t.manifest" 2>"$WORK/manifest.err")" || {
        sed 's/^/fetch-wheels:   /' "$WORK/manifest.err" >&2
        die "[$t] the cache does not match the lock (above)" "rerun with --force"
    }
    read -r n bytes <<<"$summary"
    mv "$WORK/$t.manifest" "$dir/requirements.txt"
    # Keep the folder exactly the lock: drop wheels of earlier locks.
    for f in "$dir"/*.whl "$dir"/*.tar.gz; do
        [ -e "$f" ] || continue
        grep -q -F "# file: ${f##*/}" "$dir/requirements.txt" || { rm -f "$f"; say "[$t]   removed stale ${f##*/}"; }
    done
    sha256sum <"$lock" | cut -d' ' -f1 >"$dir/.complete"
    say "[$t] complete: $n wheels, $(awk -v b="$bytes" 'BEGIN{printf "%.0f MB", b/1e6}') in $dir ($((SECONDS - t0)) s)"
    printf 'WHEELS_%s=%s\n' "${t^^}" "$dir"
}

if [ "$LOCK" = 1 ]; then
    ensure_uv
    for t in "${TARGETS[@]}"; do lock_target "$t"; done
fi
for t in "${TARGETS[@]}"; do fetch_target "$t"; done
