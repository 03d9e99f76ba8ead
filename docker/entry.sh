#!/bin/sh
# Entry point of the chatq image: turns the docker secrets docker-compose.yml
# mounts into the binaries' *_FILE settings, points a processor that was given
# no key and no upstream at the bundled fake upstream, then becomes the binary.
#   chatq-docker-entry chatq-api|chatq-processor|chatq-handler|... [--flags]
set -eu

# A secret the user did not give is mounted from docker/no-secret (compose needs
# some file); anything else, even an empty file or a directory, is given to the
# binary, which then refuses to start rather than run without the keys it was
# meant to have.
given() { # name
    [ -e "/run/secrets/$1" ] && ! cmp -s "/run/secrets/$1" /usr/local/share/chatq/no-secret
}

case "${1:-}" in
chatq-api)
    if given api_keys; then
        export API_KEYS_FILE=/run/secrets/api_keys
    fi
    ;;
chatq-processor)
    if given openai_api_key; then
        export OPENAI_API_KEY_FILE=/run/secrets/openai_api_key
    fi
    if [ -z "${OPENAI_API_KEY:-}" ] && [ -z "${OPENAI_API_KEY_FILE:-}" ] &&
        [ -z "${OPENAI_BASE_URL:-}" ] && [ -n "${CHATQ_FAKE_URL:-}" ]; then
        export OPENAI_BASE_URL="$CHATQ_FAKE_URL"
        echo "chatq-docker-entry: no OPENAI_API_KEY: answering with the FAKE upstream" \
            "at $CHATQ_FAKE_URL (answers are generated, not from a model)" >&2
    fi
    ;;
esac
exec "$@"
