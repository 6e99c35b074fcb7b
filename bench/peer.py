"""What every Python peer of make bench shares: run one measurement named on the command
line in this fresh interpreter and print it as JSON for bench/harness.lua."""
import json
import platform
import sys


def main(benches, argv):
    if len(argv) != 2 or argv[1] not in benches:
        sys.stderr.write(f"usage: {argv[0]} {'|'.join(benches)}\n")
        return 2
    result = benches[argv[1]]()
    result["bench"] = argv[1]
    result["python"] = platform.python_version()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0
