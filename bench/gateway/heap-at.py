"""What a heaptrack recording held at one moment, by allocation site.

heaptrack_print's "peak" is the heap's highest point; with 1,000 streams
that is the ramp, when every request is in flight at once. This replays the
recording's allocation events up to AT_MS milliseconds after the start and
prints the call stacks that held the most memory then.

usage: python3 heap-at.py FILE.zst AT_MS [TOP] [FRAMES]     (TOP 12, FRAMES 8)

Without AT_MS it prints the live heap every 100 ms, to choose the moment.
Record with: WRAP="heaptrack -o FILE" bash bench/gateway/streams-memory.sh
(a build with `--no-default-features`: heaptrack hooks the C library's
malloc, which mimalloc does not use).
"""
import collections
import subprocess
import sys


def main():
    path = sys.argv[1]
    at = int(sys.argv[2]) if len(sys.argv) > 2 else None
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    depth = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    text = subprocess.Popen(["zstdcat", path], stdout=subprocess.PIPE, text=True, errors="replace").stdout

    # heaptrack's interpreted format: s = string, i = instruction pointer
    # (module, then function/file/line triples, inlined frames first),
    # t = trace node (ip, parent), a = allocation info (size, trace),
    # + / - = allocation / free of an allocation info, c = time in ms.
    strings, ips, traces, infos = [None], [None], [(0, 0)], []
    live = collections.Counter()
    series, snapshot = [], None
    total = 0
    for line in text:
        kind = line[:1]
        if kind == "+":
            i = int(line[2:], 16)
            live[i] += infos[i][0]
            total += infos[i][0]
        elif kind == "-":
            i = int(line[2:], 16)
            live[i] -= infos[i][0]
            total -= infos[i][0]
        elif kind == "a":
            _, size, trace = line.split()
            infos.append((int(size, 16), int(trace, 16)))
        elif kind == "s":
            strings.append(line.rstrip("\n").split(" ", 2)[2] if line.count(" ") >= 2 else "")
        elif kind == "i":
            ips.append(line.split()[1:])
        elif kind == "t":
            _, ip, parent = line.split()
            traces.append((int(ip, 16), int(parent, 16)))
        elif kind == "c":
            t = int(line[2:], 16)
            series.append((t, total))
            if at is not None and snapshot is None and t >= at:
                snapshot = live.copy()

    if at is None:
        last = -100
        for t, held in series:
            if t - last >= 100:
                print(f"{t:6d} ms  {held / 1e6:7.2f} MB")
                last = t
        return
    if snapshot is None:
        sys.exit(f"the recording ends before {at} ms")

    def frames(trace):
        out = []
        while trace:
            ip, trace = traces[trace]
            fields = ips[ip]
            names = [strings[int(f, 16)] or "?" for f in fields[2::3]]
            out.append(" / ".join(reversed(names)) if names else fields[0])
        return out

    held = collections.Counter()
    count = collections.Counter()
    size = {}
    for info, nbytes in snapshot.items():
        if nbytes > 0:
            trace = infos[info][1]
            held[trace] += nbytes
            count[trace] += nbytes // infos[info][0]
            size[trace] = infos[info][0]
    print(f"live at {at} ms: {sum(held.values()) / 1e6:.2f} MB")
    for trace, nbytes in held.most_common(top):
        print(f"\n{nbytes / 1e6:.2f} MB in {count[trace]} allocations of {size[trace]} B")
        for f in frames(trace)[:depth]:
            print("    " + f[-200:])


if __name__ == "__main__":
    main()
