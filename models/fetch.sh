#!/usr/bin/env bash
# Puts known model files into models/, as listed in models/manifest.tsv.
#
#   models/fetch.sh NAME...     fetch by manifest name or file name
#   models/fetch.sh --default   what the default model needs (stories260K + tok512)
#   models/fetch.sh --tests     what the test suite uses, as far as it can be had
#   models/fetch.sh --list      print the manifest and what is present
#   models/fetch.sh --help
#
# For each file: nothing to do if models/FILE is present with the right size
# (and sha256 when pinned); else a symlink to a verified copy in $GLOAS_MODELS
# or ../shared/models (beside the repository); else a download (curl or wget)
# to a temporary name, verified, then renamed. A file without a public URL
# comes only from those folders. A failed download says which file is missing,
# its URL and where to put it. When a download cannot connect, the later ones
# are not tried (no network). Exit status: 0 when every requested file is in
# place, 1 otherwise, 2 for bad usage. --tests always exits 0 (unless its
# usage is bad): the tests skip what is missing, naming the file.
#
# Environment: GLOAS_MODELS (a folder searched for existing copies),
# GLOAS_FETCH_CONNECT_TIMEOUT (seconds, default 10), GLOAS_FETCH_OFFLINE=1
# (never download).
set -euo pipefail

models_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
manifest=$models_dir/manifest.tsv
connect_timeout=${GLOAS_FETCH_CONNECT_TIMEOUT:-10}
offline=${GLOAS_FETCH_OFFLINE:-0}
me=models/fetch.sh

# The files the tests use (tests/test-util.h, require_model).
test_names=(stories260K tok512 tokenizer tokenizer-model stories260K_f32 vocab-llama-spm vocab-gpt-2
            kquant-f32 kquant-q4_k kquant-q4_k_m kquant-q5_k kquant-q6_k)

say() { printf '%s: %s\n' "$me" "$*" >&2; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

file_size() { wc -c < "$1" | tr -d ' '; }

file_sha256() {
    if command -v sha256sum > /dev/null; then sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum > /dev/null; then shasum -a 256 "$1" | cut -d' ' -f1
    else say "neither sha256sum nor shasum is installed; cannot check $1"; return 1
    fi
}

# verify PATH SIZE SHA256: 0 if PATH is a readable file of that size and, when
# SHA256 is not "-", that hash. Sets verify_why to the reason otherwise.
verify_why=
verify() {
    local path=$1 size=$2 sha=$3 got
    if [ ! -f "$path" ] || [ ! -r "$path" ]; then verify_why="missing"; return 1; fi
    got=$(file_size "$path")
    if [ "$got" != "$size" ]; then verify_why="size $got, expected $size"; return 1; fi
    if [ "$sha" != "-" ]; then
        got=$(file_sha256 "$path") || { verify_why="no sha256 tool"; return 1; }
        if [ "$got" != "$sha" ]; then verify_why="sha256 $got, expected $sha"; return 1; fi
    fi
    verify_why=
    return 0
}

# Manifest rows without comments: name file url size sha256 format notes.
rows() { grep -v -e '^#' -e '^[[:space:]]*$' "$manifest"; }

# lookup NAME (a manifest name or file name): sets m_file m_url m_size m_sha
# m_notes.
lookup() {
    local want=$1 name file url size sha format notes
    while IFS=$'\t' read -r name file url size sha format notes; do
        if [ "$want" = "$name" ] || [ "$want" = "$file" ]; then
            m_file=$file m_url=$url m_size=$size m_sha=$sha m_notes=$notes
            return 0
        fi
    done < <(rows)
    return 1
}

list() {
    local name file url size sha format notes state
    printf '%-16s %-32s %11s  %-8s  %-18s %s\n' NAME FILE BYTES SHA256 FORMAT STATE
    while IFS=$'\t' read -r name file url size sha format notes; do
        if verify "$models_dir/$file" "$size" "-"; then state=present
        elif [ -e "$models_dir/$file" ]; then state=wrong-size
        else state=missing
        fi
        printf '%-16s %-32s %11s  %-8s  %-18s %s\n' "$name" "$file" "$size" \
            "$([ "$sha" = - ] && echo unpinned || echo "${sha:0:8}")" "$format" "$state"
        printf '    %s\n    %s\n' "$notes" "$([ "$url" = - ] && echo "(no public download: \$GLOAS_MODELS or ../shared/models only)" || echo "$url")"
    done < <(rows)
    printf '\nSTATE checks the size only; fetch.sh NAME also checks the sha256.\n'
}

# download URL DEST: 0 on success; the tool's own error goes to stderr. Sets
# offline=1 when it could not reach the host at all (name lookup, connection
# or connect timeout), so that later files are not tried.
download() {
    local url=$1 dest=$2 rc=0
    if command -v curl > /dev/null; then
        local progress=-sS
        [ -t 2 ] && progress=-#
        curl -fL "$progress" --connect-timeout "$connect_timeout" --retry 2 \
            -o "$dest" "$url" || rc=$?
        case $rc in 5|6|7|28) offline=1 ;; esac   # proxy, host, connect, timeout
    elif command -v wget > /dev/null; then
        wget -nv --connect-timeout="$connect_timeout" --tries=2 -O "$dest" "$url" || rc=$?
        [ $rc -eq 4 ] && offline=1                 # network failure
    else
        say "neither curl nor wget is installed"
        offline=1
        return 1
    fi
    return $rc
}

tmp_file=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { if [ -n "$tmp_file" ]; then rm -f "$tmp_file"; fi; }
trap cleanup EXIT

# fetch_one NAME: 0 when models/FILE is in place and verified.
fetch_one() {
    local want=$1 dest dir src
    if ! lookup "$want"; then
        say "'$want' is not in $manifest (see --list)"
        return 1
    fi
    dest=$models_dir/$m_file
    mkdir -p "$(dirname "$dest")"

    if verify "$dest" "$m_size" "$m_sha"; then
        [ "$optional" = 1 ] || echo "ok       $m_file (present)"
        return 0
    fi
    if [ -L "$dest" ] && [ ! -e "$dest" ]; then
        say "$dest is a dangling symlink; replacing it"
    elif [ -e "$dest" ]; then
        say "$dest is there but wrong ($verify_why); replacing it"
    fi

    for dir in ${GLOAS_MODELS:+"$GLOAS_MODELS"} "$models_dir/../../shared/models"; do
        [ -d "$dir" ] || continue
        src=$(cd "$dir" && pwd)/$m_file
        [ "$src" != "$dest" ] || continue
        if verify "$src" "$m_size" "$m_sha"; then
            rm -f "$dest"
            ln -s "$src" "$dest"
            echo "linked   $m_file -> $src"
            return 0
        elif [ -e "$src" ]; then
            say "ignoring $src ($verify_why)"
        fi
    done

    if [ "$m_url" = - ]; then
        if [ "$optional" = 1 ]; then
            say "missing $m_file (no public download; see models/fetch.sh --list)"
        else
            say "$m_file is missing and has no public download: put a copy"
            say "  at $dest or in \$GLOAS_MODELS ($m_size bytes, sha256 $m_sha)."
            say "  It is: $m_notes"
        fi
        return 1
    fi
    if [ "$offline" = 1 ]; then
        say "missing $m_file (no network; its URL: $m_url)"
        return 1
    fi
    echo "download $m_file ($m_size bytes) from $m_url"
    tmp_file=$(mktemp "$(dirname "$dest")/.$(basename "$m_file").part.XXXXXX")
    if ! download "$m_url" "$tmp_file"; then
        rm -f "$tmp_file"; tmp_file=
        say "could not download $m_file."
        say "  fetch it by hand from: $m_url"
        say "  and put it at:         $dest"
        say "  (or in \$GLOAS_MODELS); it must be $m_size bytes$([ "$m_sha" = - ] || echo ", sha256 $m_sha")"
        return 1
    fi
    if ! verify "$tmp_file" "$m_size" "$m_sha"; then
        rm -f "$tmp_file"; tmp_file=
        say "downloaded $m_file from $m_url is wrong ($verify_why); removed it"
        return 1
    fi
    chmod 0644 "$tmp_file"
    rm -f "$dest"
    mv "$tmp_file" "$dest"
    tmp_file=
    echo "ok       $m_file (downloaded$([ "$m_sha" = - ] && echo ", size checked, sha256 not pinned"))"
}

if [ ! -r "$manifest" ]; then say "cannot read $manifest"; exit 1; fi
if [ $# -eq 0 ]; then usage >&2; exit 2; fi

names=()
optional=0
for arg in "$@"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        -l|--list) list; exit 0 ;;
        --default) names+=(stories260K tok512) ;;
        --tests) names+=("${test_names[@]}"); optional=1 ;;
        -*) say "unknown option $arg (see --help)"; exit 2 ;;
        *) names+=("$arg") ;;
    esac
done

status=0
for name in "${names[@]}"; do
    fetch_one "$name" || status=1
done
if [ $status -ne 0 ]; then
    if [ $optional = 1 ]; then
        say "some files are missing (see above); the tests that need them will be skipped"
        exit 0
    fi
    say "some files are missing (see above)"
fi
exit $status
