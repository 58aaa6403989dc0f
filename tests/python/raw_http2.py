"""A bare HTTP/2 client for gRPC calls, for tests that need what no gRPC library does: a
peer that never lets the server send (its flow-control window stays 0), or one that sends
part of a message and stops, or one that does not answer the server's pings. It writes frames
by hand (RFC 7540) and HPACK header blocks as literals without indexing (RFC 7541, 6.2.2); it
answers SETTINGS and (unless told not to) PING, records the server's PINGs and GOAWAYs, and
reads and counts everything else. `send_data` keeps to the server's flow-control windows;
`open_call` sends at once (small messages)."""
import socket
import struct
import threading
import time

DATA, HEADERS, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x6, 0x7, 0x8
ENHANCE_YOUR_CALM = 0xB  # a GOAWAY's error code (RFC 7540, 7)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME = 16384  # the smallest maximum frame size a peer must accept


def frame(kind, flags, stream, payload=b""):
    return (struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
            + struct.pack(">I", stream) + payload)


def literal(name, value):
    """One header field, a literal that the decoder does not index; short strings only."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


class Goaway:
    def __init__(self, payload):
        self.at = time.monotonic()
        self.last_stream = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        self.error_code = int.from_bytes(payload[4:8], "big")
        self.debug = payload[8:]


class RawHttp2:
    def __init__(self, host, port, initial_window=65535, answer_pings=True):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.settimeout(None)
        self.connected_at = time.monotonic()
        self.received = 0  # bytes read from the server
        self.closed = threading.Event()
        self.closed_at = None
        self.answer_pings = answer_pings
        self.pings = []  # when each of the server's pings (not acks) arrived
        self.goaways = []  # Goaway, in order
        self._next_stream = 1
        self._lock = threading.Lock()
        # The server's flow-control windows for what we send: the connection's, each stream's.
        self._windows = threading.Condition()
        self._connection_window = 65535
        self._initial_window = 65535
        self._stream_windows = {}
        settings = struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, initial_window)
        self._send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0, settings))
        threading.Thread(target=self._read, daemon=True).start()

    def _send(self, data):
        with self._lock:
            self.sock.sendall(data)

    def _read(self):
        pending = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.received += len(data)
                pending += data
                while len(pending) >= 9:
                    length = int.from_bytes(pending[:3], "big")
                    if len(pending) < 9 + length:
                        break
                    kind, flags = pending[3], pending[4]
                    stream = int.from_bytes(pending[5:9], "big") & 0x7FFFFFFF
                    payload = pending[9:9 + length]
                    pending = pending[9 + length:]
                    if kind == SETTINGS and not flags & ACK:
                        self._window_settings(payload)
                        self._send(frame(SETTINGS, ACK, 0))
                    elif kind == WINDOW_UPDATE:
                        self._window_update(stream, int.from_bytes(payload, "big") & 0x7FFFFFFF)
                    elif kind == PING and not flags & ACK:
                        self.pings.append(time.monotonic())
                        if self.answer_pings:
                            self._send(frame(PING, ACK, 0, payload))
                    elif kind == GOAWAY:
                        self.goaways.append(Goaway(payload))
        except OSError:
            pass
        self.closed_at = time.monotonic()
        self.closed.set()
        with self._windows:
            self._windows.notify_all()

    def _window_settings(self, payload):
        with self._windows:
            for at in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[at:at + 6])
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    for stream in self._stream_windows:
                        self._stream_windows[stream] += value - self._initial_window
                    self._initial_window = value
            self._windows.notify_all()

    def _window_update(self, stream, increment):
        with self._windows:
            if stream == 0:
                self._connection_window += increment
            elif stream in self._stream_windows:
                self._stream_windows[stream] += increment
            self._windows.notify_all()

    @staticmethod
    def _headers(method):
        return (literal(":method", "POST") + literal(":scheme", "http")
                + literal(":path", method) + literal(":authority", "localhost")
                + literal("content-type", "application/grpc") + literal("te", "trailers"))

    def open_stream(self, method):
        """Starts a call of `method` without sending any of its message; returns the stream id
        for send_data."""
        stream = self._next_stream
        self._next_stream += 2
        with self._windows:
            self._stream_windows[stream] = self._initial_window
        self._send(frame(HEADERS, END_HEADERS, stream, self._headers(method)))
        return stream

    def send_data(self, stream, data, end_stream=False, wait_s=5.0):
        """Sends `data` on `stream` as far as the server's flow-control windows let it within
        `wait_s` of no window; returns the bytes sent."""
        sent = 0
        while sent < len(data):
            with self._windows:
                def room():
                    return min(self._connection_window, self._stream_windows[stream])
                if not self._windows.wait_for(lambda: self.closed.is_set() or room() > 0,
                                              timeout=wait_s) or self.closed.is_set():
                    return sent
                n = min(MAX_FRAME, len(data) - sent, room())
                self._connection_window -= n
                self._stream_windows[stream] -= n
            last = end_stream and sent + n == len(data)
            self._send(frame(DATA, END_STREAM if last else 0, stream, data[sent:sent + n]))
            sent += n
        return sent

    def open_call(self, method, message, send_bytes=None):
        """Starts a call of `method` ("/pkg.Service/Method") with the serialized `message`
        (a list of them: a client stream's messages); with `send_bytes`, sends only that
        many bytes of the framed messages and leaves the stream open. Returns the stream id."""
        stream = self._next_stream
        self._next_stream += 2
        headers = self._headers(method)
        messages = message if isinstance(message, list) else [message]
        body = b"".join(b"\x00" + struct.pack(">I", len(m)) + m for m in messages)
        whole = send_bytes is None
        if not whole:
            body = body[:send_bytes]
        out = frame(HEADERS, END_HEADERS, stream, headers)
        for start in range(0, len(body), MAX_FRAME):
            last = start + MAX_FRAME >= len(body)
            out += frame(DATA, END_STREAM if (last and whole) else 0, stream,
                         body[start:start + MAX_FRAME])
        self._send(out)
        return stream

    def send_ping(self):
        self._send(frame(PING, 0, 0, b"\x00" * 8))

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
