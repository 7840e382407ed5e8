# Sourced by the K/V folder's reliability scripts (crash-kill.sh,
# fault-sweep.sh) after they set SRC, the source tree.
#
# kv_script_setup NAME KEEP: sets MODEL to stories260K.bin from models/,
# $GLOAS_MODELS or ../shared/models (exit 77, skipped, when none has it) and
# WORK to a fresh folder gloas-NAME.XXXXXX under $TMPDIR, removed on exit
# unless the variable named KEEP is 1.
kv_script_setup() {
    local d
    MODEL=
    for d in "$SRC/models" "${GLOAS_MODELS:-}" "$SRC/../shared/models"; do
        if [ -n "$d" ] && [ -f "$d/stories260K.bin" ]; then MODEL="$d/stories260K.bin"; break; fi
    done
    if [ -z "$MODEL" ]; then
        echo "SKIPPED: needs models/stories260K.bin (models/fetch.sh stories260K.bin, or GLOAS_MODELS)"
        exit 77
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gloas-$1.XXXXXX")
    [ "${!2:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
}
