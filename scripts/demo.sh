#!/usr/bin/env bash
# The hybrid rig story (agent/demo/story.py): rigd on its demo rig with an OpenADR VEN, a utility's
# VTN, and rigctl telling what happens. rigd then keeps running until Ctrl-C, or for
# DEMO_SECONDS seconds. Leaves no process and no temporary directory behind.
set -uo pipefail
if [ -n "${DEMO_SECONDS:-}" ]; then
    exec python -m agent.demo.story --seconds "$DEMO_SECONDS"
fi
exec python -m agent.demo.story
