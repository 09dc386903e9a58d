#!/usr/bin/python3
# The operator's major upgrade: it runs
#   /usr/bin/python3 /scripts/inplace_upgrade.py <number of pods>
# on the primary, reads the last line of the output when it fails and
# the first 100 bytes when it succeeds. `spilo upgrade` does the work.
import os
import sys

if len(sys.argv) != 2 or not sys.argv[1].isdigit():
    sys.exit("usage: inplace_upgrade.py <number of members>")
os.execv("/usr/local/bin/spilo", ["spilo", "upgrade", "--members", sys.argv[1]])
