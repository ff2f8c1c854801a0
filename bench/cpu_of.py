#!/usr/bin/env python3
"""Runs a command, then writes its user + system CPU seconds (children included) to a file.

    cpu_of.py OUT COMMAND [ARGS...]     exits with the command's status
"""
import resource
import subprocess
import sys

out, cmd = sys.argv[1], sys.argv[2:]
rc = subprocess.call(cmd)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as f:
    f.write(f"{r.ru_utime + r.ru_stime:.3f}\n")
sys.exit(rc)
