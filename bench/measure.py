"""Runs commands side by side and reports what the kernel accounted to them (bench/decode.ts).

    python3 bench/measure.py '[["cmd", "arg"], ["cmd2"]]'

Prints one JSON object: cpu_s (user + system of every process, from wait4, so threads and the
last moments before exit count), pss_kb_peak (the highest sum over the running processes of
/proc/PID/smaps_rollup's Pss, sampled every 100 ms: shared libraries are counted once, split
between the processes that map them), rss_kb_peak (the sum of each process's own peak RSS,
which counts shared libraries once per process) and each command's stdout. Node cannot wait4
a child for its rusage, hence Python.
"""

import json
import os
import subprocess
import sys
import threading
import time


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    commands = json.loads(sys.argv[1])
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for c in commands]
    outputs = [b""] * len(procs)

    def read(i):
        outputs[i] = procs[i].stdout.read()

    readers = [threading.Thread(target=read, args=(i,)) for i in range(len(procs))]
    for r in readers:
        r.start()
    running = {p.pid for p in procs}
    cpu = 0.0
    rss_kb = 0
    pss_peak = 0
    codes = [None] * len(procs)
    while running:
        pss_peak = max(pss_peak, sum(pss_kb(pid) for pid in running))
        for pid in list(running):
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                running.discard(pid)
                cpu += usage.ru_utime + usage.ru_stime
                rss_kb += usage.ru_maxrss
                codes[[p.pid for p in procs].index(pid)] = os.waitstatus_to_exitcode(status)
        if running:
            time.sleep(0.1)
    for r in readers:
        r.join()
    print(
        json.dumps(
            {
                "cpu_s": cpu,
                "pss_kb_peak": pss_peak,
                "rss_kb_peak": rss_kb,
                "exit_codes": codes,
                "outputs": [o.decode() for o in outputs],
            }
        )
    )


main()
