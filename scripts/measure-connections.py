#!/usr/bin/env python3
"""How long `vqrae serve` keeps hostile connections: the time to close an idle keep-alive
connection (after one GET /health) and a connection that never sends a byte, and the time from
SIGTERM to exit while a client trickles one header byte every 0.5 s. Also whether stderr, not a
terminal here, carries ANSI colour codes. Waits at most CAP seconds (env, default 120) for each.

    python3 scripts/measure-connections.py target/release/vqrae [extra serve flags]

Run from the repository root (it serves models/vqrae-easyvqa on a free port)."""
import os, signal, socket, subprocess, sys, threading, time

CAP = float(os.environ.get("CAP", "120"))
binary, extra = sys.argv[1], sys.argv[2:]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
proc = subprocess.Popen([binary, "serve", "--port", str(port), "--model", "models/vqrae-easyvqa", *extra],
                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
err_lines = []
threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True).start()
deadline = time.time() + 120
while True:
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=1)
        c.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"); c.recv(100); c.close(); break
    except OSError:
        if time.time() > deadline: sys.exit("server did not start")
        time.sleep(0.2)

def time_to_close(sock, start):
    sock.settimeout(max(0.01, CAP - (time.time() - start)))
    try:
        while sock.recv(65536): pass
    except socket.timeout:
        return None
    except OSError:
        pass
    return time.time() - start

res = {}
def idle():
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data: data += c.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n: body += c.recv(4096)
    res["idle"] = time_to_close(c, time.time())
def silent():
    c = socket.create_connection(("127.0.0.1", port))
    res["silent"] = time_to_close(c, time.time())
ts = [threading.Thread(target=f) for f in (idle, silent)]
[t.start() for t in ts]; [t.join() for t in ts]

# a client trickling one header byte per 0.5 s; SIGTERM after 1 s
c = socket.create_connection(("127.0.0.1", port))
stop = threading.Event()
def trickle():
    try:
        c.sendall(b"GET /health HTTP/1.1\r\nx-slow: ")
        while not stop.wait(0.5): c.sendall(b"a")
    except OSError:
        pass
threading.Thread(target=trickle, daemon=True).start()
time.sleep(1)
t0 = time.time(); proc.send_signal(signal.SIGTERM)
try:
    proc.wait(timeout=CAP); res["shutdown"] = time.time() - t0
except subprocess.TimeoutExpired:
    res["shutdown"] = None; proc.kill(); proc.wait()
stop.set()
fmt = lambda v: f"{v:.2f} s" if v is not None else f"> {CAP:.0f} s (still open)"
print(f"{os.path.basename(binary)}: idle connection closed after {fmt(res['idle'])}; "
      f"silent connection closed after {fmt(res['silent'])}; "
      f"SIGTERM -> exit with a header trickler: {fmt(res['shutdown'])}")
ansi = any(b"\x1b[" in l for l in err_lines)
print(f"  stderr (not a TTY) has ANSI colour codes: {ansi}")
