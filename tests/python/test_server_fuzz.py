"""Seeded, time-bounded randomized test of the gRPC service against hostile inputs.

A real bert_server (CPU backend, tiny golden model) gets a few hundred randomly combined
requests from several threads at once: structured ones (random and extreme values in every
field of EmbedRequest / TokenizeRequest / DecodeRequest, EmbedStream sessions mixing good and
bad messages)
and raw ones (random bytes, mutated serialized requests). test_server_errors.py enumerates
the single bad inputs; this file is about their combinations and extreme values.

The oracle, for every call:
  - the status is one the proto documents for the method and one this setup can produce;
    for a request the Python protobuf runtime can parse, `predict_embed` / `predict_tokenize` /
    `predict_decode` say which of OK / INVALID_ARGUMENT it must be; where that depends on how
    texts tokenize (TRUNCATION_REJECT, the response size under PADDING_TRIM) the server's own
    Tokenize of the texts (itself checked) decides; an INVALID_ARGUMENT message must name a
    field that is really wrong; bytes Python cannot parse must get INVALID_ARGUMENT, and so
    must a request with a group at its top level, which the server refuses before parsing;
  - an OK answer has one result per input, exactly the heads asked for, shapes from
    seq_length / padding / layers, the requested dtype, finite values, unit norms under
    `normalize`, num_tokens / truncated as Tokenize says, and echoes request_id; a Decode
    answer has Hugging Face tokenizers' text for each input;
  - an input repeated in many requests (the canary) gets the same vectors whatever it was
    batched with;
  - every error has a message, no call takes longer than its deadline.
Afterwards the server is alive and SERVING, a known request gives bit-identical output,
and /metrics counts exactly the calls the server answered.

The seed is printed; BERT_FUZZ_SEED=<n> replays a run (the requests are generated up front
in one thread, so a seed always sends the same requests; only their interleaving varies).
BERT_FUZZ_SCALE=<x> multiplies the number of calls (about 1,450 calls, 5 s on 2 cores at 1).
test_oracle_catches_wrong_answers shows the oracle failing on spoilt answers.
"""
import math
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor
from google.protobuf.message import DecodeError
from tokenizers import BertWordPieceTokenizer, models

sys.path.insert(0, os.path.dirname(__file__))
from server_harness import (DTYPE_TOL, TINY_VOCAB, Server, decode, metric_value,  # noqa: E402
                            rel_err, stubs)

SEED = int(os.environ.get("BERT_FUZZ_SEED") or "20240611")
SCALE = float(os.environ.get("BERT_FUZZ_SCALE", "1"))  # more calls for a longer local run
THREADS = 4
NUM_EMBED = int(500 * SCALE)
NUM_TOKENIZE = int(200 * SCALE)
NUM_DECODE = int(150 * SCALE)
NUM_STREAMS = int(8 * SCALE)
MESSAGES_PER_STREAM = 10  # THREADS * this stays below MAX_CONCURRENT: no admission refusals
NUM_RAW = int(400 * SCALE)
TIME_BUDGET_S = 25 * SCALE  # per test; about 5 s are needed on a 2-core VM
CALL_DEADLINE_S = 10
STREAM_DEADLINE_S = 30
MAX_INPUTS = 8
MAX_MESSAGE_BYTES = 512 * 1024
MAX_CONCURRENT = 64

INT32_MAX = 2**31 - 1
INT32_MIN = -2**31
UINT32_MAX = 2**32 - 1

# Every status the proto's header comment ("Error statuses, for every method") and
# server/README.md ("Errors") document for Embed, EmbedStream, Tokenize and Decode.
DOCUMENTED_CODES = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INTERNAL,
}
# Of those, what this setup may see: the server is SERVING and not draining (no UNAVAILABLE),
# concurrency stays below its admission limit and every call has a generous deadline (no
# RESOURCE_EXHAUSTED except for a request over --max_message_bytes, no DEADLINE_EXCEEDED),
# nothing is cancelled, there is no bearer token, the tiny model has a pooler but no classifier
# (FAILED_PRECONDITION for HEAD_LOGITS and HEAD_TOKEN_LOGITS only), and an engine fault
# (INTERNAL) is a bug.
POSSIBLE_HERE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION}
assert POSSIBLE_HERE <= DOCUMENTED_CODES

# The canary: one token input mixed into many requests; its vector heads must not depend on
# what it is batched with, on seq_length, padding or the other heads.
CANARY_IDS = [101, 200, 300, 400, 500, 102]
DTYPE_BYTES = {1: 4, 2: 2, 3: 2}


# ---------------------------------------------------------------------------------------
# Random inputs
# ---------------------------------------------------------------------------------------

def _vocab_words():
    with open(TINY_VOCAB, encoding="utf-8") as f:
        words = [w.strip() for w in f]
    return [w for w in words if w and not w.startswith(("[", "##"))]


CONTROL = [chr(c) for c in [*range(0, 32), 0x7F, *range(0x80, 0xA0)]]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
SPACES = [" ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2028", "\u2029", "\u1680"]
COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u20dd", "\U0001D165"]
ODD = ["\ufffd", "\uffff", "\ufffe", "\U0010ffff", "\ue000", "\U000f0000", "\U0001F600",
       "\U0001F469\u200d\U0001F4BB", "\u202e", "\u0645\u0631\u062d\u0628\u0627", "\u05e9\u05dc",
       "\u0130", "\u00df", "\ufb01", "\u2126", "\u1e9e", "[CLS]", "[SEP]", "[MASK]", "[PAD]",
       "[UNK]", "##", "##ing"]


class Gen:
    """Random requests. `bad` in [0, 1] is each field's chance of an invalid value."""

    def __init__(self, rng, pb2, info):
        self.rng = rng
        self.pb2 = pb2
        self.words = _vocab_words()
        self.vocab = info.config.vocab_size
        self.type_vocab = info.config.type_vocab_size
        self.layers = info.config.num_layers
        self.max_pos = info.config.max_position_embeddings

    def chance(self, p):
        return self.rng.random() < p

    def text(self):
        r = self.rng
        if self.chance(0.08):
            return ""
        pieces = []
        count = r.choice([r.randint(1, 12), r.randint(1, 40), r.randint(200, 700)])
        for _ in range(count):
            kind = r.random()
            if kind < 0.45:
                pieces.append(r.choice(self.words))
            elif kind < 0.55:
                pieces.append("".join(chr(r.randint(0x21, 0x7E)) for _ in range(r.randint(1, 6))))
            elif kind < 0.62:
                pieces.append(r.choice(CONTROL))
            elif kind < 0.68:
                pieces.append(r.choice(COMBINING) * r.randint(1, 3))
            elif kind < 0.73:
                pieces.append(r.choice(ZERO_WIDTH))
            elif kind < 0.78:
                cjk = [chr(r.randint(0x4E00, 0x9FFF)) for _ in range(r.randint(1, 4))]
                pieces.append("".join(cjk))
            elif kind < 0.86:
                pieces.append(r.choice(ODD))
            elif kind < 0.90:  # a word past the WordPiece limit (100 characters)
                pieces.append(r.choice(["a", "\u00e9", "x\u0301", "\u4e00"]) * r.randint(90, 400))
            else:
                pieces.append("".join(chr(r.randint(0xA0, 0x2FFF)) for _ in range(r.randint(1, 5))))
            pieces.append(r.choice(SPACES) if self.chance(0.8) else "")
        text = "".join(pieces)
        if self.chance(0.1):  # starts with a lone combining mark
            text = r.choice(COMBINING) + text
        return text

    def text_input(self, message):
        message.text_a = self.text()
        kind = self.rng.random()
        if kind < 0.3:
            message.text_b = self.text()
        elif kind < 0.4:
            message.text_b = ""

    def token_input(self, message, bad):
        r = self.rng
        n = r.choice([r.randint(1, 8), r.randint(1, 40),
                      r.randint(self.max_pos - 3, self.max_pos + 200)])
        ids = [r.choice([0, self.vocab - 1, r.randrange(self.vocab)]) for _ in range(n)]
        if self.chance(bad):
            if self.chance(0.2):
                ids = []
            else:
                ids[r.randrange(n)] = r.choice([-1, self.vocab, self.vocab + 1, INT32_MAX,
                                                INT32_MIN])
        message.input_word_ids.extend(ids)
        kind = r.random()
        if kind < 0.5:
            return  # no type ids: all zero
        types = [r.randrange(self.type_vocab) for _ in ids]
        if self.chance(bad):
            if self.chance(0.5) or not types:
                types = types[:-1] if types and self.chance(0.5) else types + [0]
            else:
                types[r.randrange(len(types))] = r.choice([2, -1, INT32_MAX, INT32_MIN])
        message.input_type_ids.extend(types)

    def seq_length(self, bad):
        r = self.rng
        if self.chance(bad):
            return r.choice([1, self.max_pos + 1, 2**30, 2**30 + 1, UINT32_MAX])
        return r.choice([0, 0, 2, 3, 4, r.randint(5, 64), r.randint(5, 64), 128, self.max_pos])

    def num_inputs(self, bad):
        if self.chance(bad):
            return self.rng.choice([0, MAX_INPUTS + 1])
        return self.rng.choice([1, 1, 2, 3, MAX_INPUTS])

    def enum(self, good, bad_values, bad):
        return self.rng.choice(bad_values if self.chance(bad) else good)

    def request_id(self):
        r = self.rng
        kind = r.random()
        if kind < 0.3:
            return ""
        if kind < 0.6:
            return f"req-{r.randrange(10**9)}"
        if kind < 0.85:
            return "".join(r.choice(CONTROL + ZERO_WIDTH + ODD + COMBINING + ["a", "\u00e9"])
                           for _ in range(r.randint(1, 20)))
        if kind < 0.99:
            return "id" * r.randint(500, 3000)
        # Near the message limit: the answer's echo alone may not fit, or the request not.
        return "x" * (MAX_MESSAGE_BYTES + r.choice([-r.randint(0, 3000), r.randint(0, 64)]))

    def embed_request(self, bad, canary=True):
        pb2, r = self.pb2, self.rng
        req = pb2.EmbedRequest()
        for _ in range(self.num_inputs(bad)):
            inp = req.inputs.add()
            kind = r.random()
            if self.chance(bad * 0.2):
                pass  # neither text nor tokens
            elif kind < 0.6:
                self.text_input(inp.text)
            else:
                self.token_input(inp.tokens, bad * 0.5)
        if canary and 0 < len(req.inputs) < MAX_INPUTS and self.chance(0.3):
            canary_input = pb2.Input(tokens=pb2.TokenInput(input_word_ids=CANARY_IDS))
            req.inputs.insert(r.randrange(len(req.inputs) + 1), canary_input)
        req.seq_length = self.seq_length(bad)
        good_heads = [pb2.HEAD_POOLED, pb2.HEAD_SEQUENCE, pb2.HEAD_ENCODER_OUTPUTS,
                      pb2.HEAD_DEFAULT, pb2.HEAD_MEAN_POOLED, pb2.HEAD_CLS]
        for _ in range(r.choice([0, 1, 1, 2, 3, 7])):
            req.heads.append(self.enum(good_heads, [0, 9, 17, INT32_MAX, -1], bad * 0.5))
        if self.chance(0.05):  # a valid head that this model (no classifier) cannot compute
            req.heads.insert(r.randrange(len(req.heads) + 1),
                             r.choice([pb2.HEAD_LOGITS, pb2.HEAD_TOKEN_LOGITS]))
        if self.chance(0.5):
            for _ in range(r.randint(1, 6)):
                req.layers.append(self.enum(list(range(-self.layers, self.layers)),
                                            [-self.layers - 1, self.layers, INT32_MAX, INT32_MIN],
                                            bad * 0.5))
        req.padding = self.enum([0, 1, 2], [3, 99, -1], bad * 0.3)
        req.output_dtype = self.enum([0, 1, 2, 3], [4, -7], bad * 0.3)
        req.truncation = self.enum([0, 1, 2, 3], [4, INT32_MIN], bad * 0.3)
        req.normalize = self.chance(0.5)
        req.return_offsets = self.chance(0.25)  # refused with token inputs
        req.request_id = self.request_id()
        if self.chance(bad * 0.2):  # the tiny model has no prompts: any name is refused
            odd = "".join(self.rng.choice(CONTROL + ZERO_WIDTH + ODD + COMBINING)
                          for _ in range(70))
            req.prompt_name = self.rng.choice(["query", "q" * 5000, odd])
        return req

    def tokenize_request(self, bad):
        req = self.pb2.TokenizeRequest()
        for _ in range(self.num_inputs(bad)):
            self.text_input(req.inputs.add())
        req.seq_length = self.seq_length(bad)
        req.truncation = self.enum([0, 1, 2, 3], [4, 77, -2], bad * 0.3)
        if self.chance(bad * 0.2):  # the tiny model has no prompts
            req.prompt_name = self.rng.choice(["query", "\u00e9" * 50])
        return req

    def decode_request(self, bad):
        """Sequences of ids from the whole vocabulary (special tokens and "##" pieces too),
        now and then long ones of [unused] tokens (one byte each on the wire), most of them
        over the limit on the ids of one request; `bad`: ids outside the vocabulary."""
        r = self.rng
        req = self.pb2.DecodeRequest(keep_special_tokens=self.chance(0.5))
        for _ in range(self.num_inputs(bad)):
            ids = req.inputs.add().ids
            if self.chance(0.06):
                ids.extend(r.randrange(1, 100) for _ in range(r.choice([2000, 30000, 100000])))
            else:
                ids.extend(r.randrange(self.vocab) for _ in range(r.randint(0, 60)))
            if ids and self.chance(bad):
                ids[r.randrange(len(ids))] = r.choice([-1, self.vocab, INT32_MAX, INT32_MIN])
        return req

    def badness(self):
        return self.rng.choice([0.0, 0.0, 0.05, 0.2, 0.5])

    def mutate(self, data):
        """1-4 random edits of a serialized message."""
        r = self.rng
        data = bytearray(data)
        for _ in range(r.randint(1, 4)):
            op = r.randrange(7)
            pos = r.randint(0, len(data))
            if op == 0 and data:  # flip a bit
                i = r.randrange(len(data))
                data[i] ^= 1 << r.randrange(8)
            elif op == 1 and data:  # replace a byte by an interesting one
                data[r.randrange(len(data))] = r.choice([0x00, 0x7F, 0x80, 0xFF, 0xC0, 0xED, 0x0A,
                                                         0x12])
            elif op == 2:  # insert random bytes
                data[pos:pos] = bytes(r.randrange(256) for _ in range(r.randint(1, 8)))
            elif op == 3:  # delete a span
                del data[pos:pos + r.randint(1, 16)]
            elif op == 4:  # duplicate a span
                data[pos:pos] = data[pos:pos + r.randint(1, 32)]
            elif op == 5:  # truncate
                del data[pos:]
            else:  # insert a huge varint or a long length prefix
                data[pos:pos] = r.choice([b"\xff" * 9 + b"\x01", b"\x80" * 11,
                                          b"\x0a\xff\xff\xff\x7f", b"\x10\xff\xff\xff\xff\x0f",
                                          b"\x0b", b"\x0c"])
        return bytes(data)

    def raw_bytes(self):
        r = self.rng
        if self.chance(0.1):
            return b""
        return bytes(r.randrange(256) for _ in range(r.randint(1, 200)))


# ---------------------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------------------

class Expect:
    """What a request must get. `codes`: the allowed status codes (two where the answer
    depends on how texts tokenize); `needles`: for INVALID_ARGUMENT, the message must contain
    one of them (it names the bad field); None: any message."""

    def __init__(self, codes, needles=None):
        self.codes = set(codes)
        self.needles = needles

    def certain(self):
        return len(self.codes) == 1


OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
# Bytes that Python's protobuf runtime refuses. The server's C++ parser is not always as
# strict (it wraps a tag whose field number overflows 32 bits, where upb refuses it), so it
# may read them as some other request; either way that request is nonsense and must be
# refused, but the message need not say "not a valid protobuf message".
UNPARSEABLE = Expect({INVALID})
# What the server's scan before parsing (server/grpc/wire.cc) refuses among requests Python's
# runtime parses: a group in any message (mutations insert its tags; Python skips it, the
# scan cannot read past it), and more entries than a limit allows, or more unknown fields
# (numbers a message does not have, or fields of another wire type) than the server keeps,
# counted over all the request's messages as the server counts them (wire_expect).
NOT_A_MESSAGE = Expect({INVALID}, ["not a valid protobuf message"])
# gRPC refuses a request over --max_message_bytes before the service sees it.
OVERSIZED = Expect({grpc.StatusCode.RESOURCE_EXHAUSTED})
OVER_A_WIRE_LIMIT = Expect({INVALID}, ["exceed the limit of", "unknown fields"])
MAX_UNKNOWN_FIELDS = 1 << 16  # server/grpc/wire.h, kMaxUnknownFields


def _varint(data, i, max_bytes=10):
    """The varint at data[i] and the index after it; (None, _) where it is cut short or longer
    than `max_bytes` (protobuf's C++ parser reads tags and lengths in at most 5)."""
    value, shift = 0, 0
    while i < len(data) and shift < 7 * max_bytes:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i
    return None, i


def wire_fields(data):
    """The top-level (field number, wire type, payload) of `data`, as the server's scan reads
    them; None where it cannot read to the end (a group, a tag past 32 bits, a tag or length
    over 5 bytes, a cut field)."""
    out, i = [], 0
    while i < len(data):
        tag, i = _varint(data, i, max_bytes=5)
        if tag is None or tag > 0xFFFFFFFF:
            return None
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, i = _varint(data, i)
            if value is None:
                return None
            payload = b""
        elif wire_type == 2:
            length, i = _varint(data, i, max_bytes=5)
            if length is None or i + length > len(data):
                return None
            payload, i = data[i:i + length], i + length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            if i + size > len(data):
                return None
            payload, i = b"", i + size
        else:
            return None
        out.append((number, wire_type, payload))
    return out


def scalar_entries(wire_type, payload):
    return sum(1 for b in payload if not b & 0x80) if wire_type == 2 else 1


_FD = descriptor.FieldDescriptor
_WIRE_TYPES = {**{t: 1 for t in (_FD.TYPE_DOUBLE, _FD.TYPE_FIXED64, _FD.TYPE_SFIXED64)},
               **{t: 5 for t in (_FD.TYPE_FLOAT, _FD.TYPE_FIXED32, _FD.TYPE_SFIXED32)},
               **{t: 2 for t in (_FD.TYPE_STRING, _FD.TYPE_BYTES, _FD.TYPE_MESSAGE)}}


def _packable(field):
    return field.label == _FD.LABEL_REPEATED and _WIRE_TYPES.get(field.type, 0) != 2


def _takes(field, wire_type):
    """Whether the parser reads an entry of `wire_type` into `field` (None: a number the
    message does not have); otherwise it keeps it as an unknown field."""
    return field is not None and (wire_type == _WIRE_TYPES.get(field.type, 0)
                                  or (_packable(field) and wire_type == 2))


def wire_expect(data, message_type, limits):
    """The server's refusal before parsing (server/grpc/wire.cc), or None: it reads `data` as
    a `message_type` and every message nested in it, as the parser would, and counts the
    unknown fields and the entries of the fields in `limits` ({"TokenInput.input_word_ids":
    limit}) over the whole request."""
    counts = dict.fromkeys(limits, 0)
    unknown = 0

    def scan(data, message, depth):
        nonlocal unknown
        fields = wire_fields(data)
        if fields is None or depth > 100:
            return False
        for number, wire_type, payload in fields:
            field = message.fields_by_number.get(number)
            if not _takes(field, wire_type):
                unknown += 1
                continue
            key = f"{message.name}.{field.name}"
            if key in counts:
                counts[key] += scalar_entries(wire_type, payload) if _packable(field) else 1
            if field.type == _FD.TYPE_MESSAGE and not scan(payload, field.message_type, depth + 1):
                return False
        return True

    if not scan(data, message_type.DESCRIPTOR, 0):
        return NOT_A_MESSAGE
    if unknown > MAX_UNKNOWN_FIELDS:
        return OVER_A_WIRE_LIMIT
    if any(counts[key] > limit for key, limit in limits.items()):
        return OVER_A_WIRE_LIMIT
    return None


class Limits:
    def __init__(self, info):
        self.max_inputs = info.limits.max_inputs_per_request
        self.max_seq = info.limits.max_seq_length
        self.default_seq = info.limits.default_seq_length
        self.vocab = info.config.vocab_size
        self.type_vocab = info.config.type_vocab_size
        self.layers = info.config.num_layers
        self.hidden = info.config.hidden_size
        self.max_message = info.limits.max_message_bytes
        self.classifier = info.HasField("classifier")


def resolved_seq_length(seq_length, lim):
    """The server's seq_length for a request, or None when it is invalid."""
    if seq_length == 0:
        return lim.default_seq  # the server reports it already clamped to max_seq
    return seq_length if 2 <= seq_length <= lim.max_seq else None


def wanted_heads(pb2, req):
    return set(req.heads) if req.heads else {pb2.HEAD_DEFAULT}


def layers_in_order(req, lim):
    if not req.layers:
        return list(range(lim.layers))
    return [l + lim.layers if l < 0 else l for l in req.layers]


def text_indices(req):
    return [i for i, inp in enumerate(req.inputs) if inp.WhichOneof("kind") == "text"]


def predict_embed(pb2, req, lim):
    """The outcomes the proto's rules allow for `req`, from the request alone. Definite
    errors make INVALID_ARGUMENT certain; where the answer depends on how the texts tokenize
    (TRUNCATION_REJECT, the response size with PADDING_TRIM) both OK and INVALID_ARGUMENT
    are allowed, and resolve_embed decides."""
    errors, maybe = [], []
    n = len(req.inputs)
    if n == 0 or n > lim.max_inputs:
        errors.append("inputs:")
    seq = resolved_seq_length(req.seq_length, lim)
    if seq is None:
        errors.append("seq_length")
    valid_heads = {pb2.HEAD_POOLED, pb2.HEAD_SEQUENCE, pb2.HEAD_ENCODER_OUTPUTS,
                   pb2.HEAD_DEFAULT, pb2.HEAD_MEAN_POOLED, pb2.HEAD_CLS, pb2.HEAD_LOGITS,
                   pb2.HEAD_TOKEN_LOGITS}
    errors += [f"heads[{j}]" for j, h in enumerate(req.heads) if h not in valid_heads]
    # A classifier head on a model without classifier: FAILED_PRECONDITION, unless another
    # check comes first (the order of the checks is the server's; both are allowed then).
    unavailable = (bool({pb2.HEAD_LOGITS, pb2.HEAD_TOKEN_LOGITS} & set(req.heads))
                   and not lim.classifier)
    errors += [f"layers[{j}]" for j, l in enumerate(req.layers)
               if not -lim.layers <= l < lim.layers]
    # Each head once, each layer twice (by its index and its negative one) at most.
    if len(req.heads) > len(valid_heads):
        errors.append("heads:")
    if len(req.layers) > 2 * lim.layers:
        errors.append("layers:")
    if req.padding not in (0, 1, 2):
        errors.append("padding")
    if req.output_dtype not in (0, 1, 2, 3):
        errors.append("output_dtype")
    if req.truncation not in (0, 1, 2, 3):
        errors.append("truncation")
    if req.prompt_name:
        errors.append("prompt_name")
    reject = req.truncation == pb2.TRUNCATION_REJECT
    token_bounds = []  # (least, most) num_tokens per input, for the response size
    for i, inp in enumerate(req.inputs):
        kind = inp.WhichOneof("kind")
        if kind is None:
            errors.append(f"inputs[{i}]")
        elif kind == "tokens":
            ids, types = list(inp.tokens.input_word_ids), list(inp.tokens.input_type_ids)
            if (not ids or any(not 0 <= t < lim.vocab for t in ids)
                    or (types and len(types) != len(ids))
                    or any(not 0 <= t < lim.type_vocab for t in types)
                    or (reject and seq is not None and len(ids) > seq)):
                errors.append(f"inputs[{i}].tokens")
            if req.return_offsets:
                errors.append(f"inputs[{i}]: return_offsets")
            if seq is not None:
                token_bounds.append((min(len(ids), seq),) * 2)
        else:
            if reject:
                maybe.append(f"inputs[{i}].text")
            if seq is not None:
                token_bounds.append((min(3 if inp.text.HasField("text_b") else 2, seq), seq))
    if not errors:
        least, most = response_tensor_bytes(pb2, req, lim, seq, token_bounds)
        if least > response_budget(pb2, req, lim):
            errors.append("message limit")
        elif most > response_budget(pb2, req, lim):
            maybe.append("message limit")
    if errors:
        return Expect({INVALID, PRECONDITION} if unavailable else {INVALID}, errors + maybe)
    if unavailable:  # checked before the texts are tokenized
        return Expect({PRECONDITION})
    if maybe:
        return Expect({OK, INVALID}, maybe)
    return Expect({OK})


def response_tensor_bytes(pb2, req, lim, seq, token_bounds):
    """(least, most) bytes of tensors an OK answer carries: the README documents that a
    response over --max_message_bytes is refused; server/core/validation.cc's
    CheckResponseSize counts it this way."""
    vector = lim.hidden * DTYPE_BYTES[req.output_dtype or 1]
    matrices, vectors = tensors_per_result(pb2, req, lim)
    trim = req.padding == pb2.PADDING_TRIM
    least = most = 0
    # Offsets: two varints of at most 5 bytes per token and two length prefixes, as counted.
    offsets = 10 if req.return_offsets else 0
    for lo, hi in token_bounds:
        least += (matrices * (lo if trim else seq) + vectors) * vector + offsets * (lo + 1)
        most += (matrices * (hi if trim else seq) + vectors) * vector + offsets * (hi + 1)
    return least, most


def tensors_per_result(pb2, req, lim):
    """(matrices, vectors) in each result of an OK answer."""
    heads = wanted_heads(pb2, req)
    matrices = ((pb2.HEAD_SEQUENCE in heads)
                + (len(layers_in_order(req, lim)) if pb2.HEAD_ENCODER_OUTPUTS in heads else 0))
    vectors = sum(h in heads for h in (pb2.HEAD_POOLED, pb2.HEAD_DEFAULT, pb2.HEAD_MEAN_POOLED,
                                       pb2.HEAD_CLS))
    return matrices, vectors


def response_budget(pb2, req, lim):
    """Bytes left for tensors: the framing's allowance (1,024 bytes, 128 per result and 48
    per tensor, as CheckResponseSize reserves) and the echoed request_id are not."""
    matrices, vectors = tensors_per_result(pb2, req, lim)
    framing = 1024 + len(req.inputs) * (128 + 48 * (matrices + vectors))
    return lim.max_message - framing - len(req.request_id.encode())


def resolve_embed(env, req, expect, label):
    """Makes `expect` exact with the server's Tokenize of the request's texts (each answer
    checked by check_tokenize_ok): returns (Expect, {input index: Encoding}, problems)."""
    pb2, lim = env["pb2"], env["lim"]
    seq = resolved_seq_length(req.seq_length, lim)
    texts = text_indices(req)
    if OK not in expect.codes or not texts:
        return expect, {}, []
    # The pairs' tokens (so their offsets) depend on the truncation rule; their counts do not
    # (under TRUNCATION_REJECT, TRUNCATE tells which input would be cut).
    longest_first = req.truncation == pb2.TRUNCATION_LONGEST_FIRST
    treq = pb2.TokenizeRequest(inputs=[req.inputs[i].text for i in texts], seq_length=seq,
                               truncation=pb2.TRUNCATION_LONGEST_FIRST if longest_first
                               else pb2.TRUNCATION_TRUNCATE)
    code, resp, details, seconds = unary(env["tokenize"], treq.SerializeToString())
    env["tally"].add("Tokenize", code, seconds, f"{label} (oracle)")
    if code != OK:
        return expect, {}, [f"{label}: the oracle's Tokenize got {code.name}: {details!r}"]
    problems = [f"{label} (oracle Tokenize): {p}" for p in check_tokenize_ok(pb2, treq, resp, lim)]
    encodings = dict(zip(texts, resp.encodings))
    if expect.certain():
        return expect, encodings, problems
    if req.truncation == pb2.TRUNCATION_REJECT:
        too_long = [i for i in texts if encodings[i].truncated]
        if too_long:  # the server tokenizes in input order and names the first
            env["tally"].note("resolved: text too long under REJECT")
            return Expect({INVALID}, [f"inputs[{too_long[0]}].text"]), encodings, problems
    counts = [encodings[i].num_tokens if i in encodings
              else min(len(inp.tokens.input_word_ids), seq) for i, inp in enumerate(req.inputs)]
    size, _ = response_tensor_bytes(pb2, req, lim, seq, [(c, c) for c in counts])
    if size > response_budget(pb2, req, lim):
        env["tally"].note("resolved: response over the message limit")
        return Expect({INVALID}, ["message limit"]), encodings, problems
    env["tally"].note("resolved: OK")
    return Expect({OK}), encodings, problems


def check_tensor(problems, where, tensor, shape, dtype):
    """Shape, dtype, byte count and finiteness; returns the decoded array or None."""
    want_dtype = dtype or 1
    if tensor.dtype != want_dtype:
        problems.append(f"{where}: dtype {tensor.dtype}, want {want_dtype}")
        return None
    if list(tensor.shape) != list(shape):
        problems.append(f"{where}: shape {list(tensor.shape)}, want {list(shape)}")
        return None
    if len(tensor.data) != math.prod(shape) * DTYPE_BYTES[want_dtype]:
        problems.append(f"{where}: {len(tensor.data)} bytes for shape {list(shape)}")
        return None
    values = decode(tensor)
    if not np.all(np.isfinite(values)):
        problems.append(f"{where}: non-finite values")
        return None
    return values


def check_embed_ok(pb2, req, resp, lim, canary_ref, encodings, tally=None):
    """Problems with an OK EmbedResponse to `req` (an empty list when it is right).
    `encodings`: the server's Tokenize of each text input, by input index."""
    problems = []
    if resp.request_id != req.request_id:
        problems.append("request_id not echoed")
    if resp.HasField("error"):
        problems.append(f"OK answer with error {resp.error.code}")
    if len(resp.results) != len(req.inputs):
        return problems + [f"{len(resp.results)} results for {len(req.inputs)} inputs"]
    seq = resolved_seq_length(req.seq_length, lim)
    heads = wanted_heads(pb2, req)
    layers = layers_in_order(req, lim) if pb2.HEAD_ENCODER_OUTPUTS in heads else []
    trim = req.padding == pb2.PADDING_TRIM
    tol = DTYPE_TOL[req.output_dtype or 1]
    hidden = lim.hidden
    for i, (inp, res) in enumerate(zip(req.inputs, resp.results)):
        where = f"results[{i}]"
        nt = res.num_tokens
        if inp.WhichOneof("kind") == "tokens":
            n_ids = len(inp.tokens.input_word_ids)
            want = (min(n_ids, seq), n_ids > seq)
        else:
            if i not in encodings:  # the oracle's own Tokenize failed: reported already
                continue
            want = (encodings[i].num_tokens, encodings[i].truncated)
        if (nt, res.truncated) != want:
            problems.append(f"{where}: (num_tokens, truncated) {(nt, res.truncated)}, want {want}")
        spans = list(zip(res.token_starts, res.token_ends))
        if not req.return_offsets:
            if spans:
                problems.append(f"{where}: offsets without return_offsets")
        elif i in encodings and spans != list(zip(encodings[i].token_starts,
                                                  encodings[i].token_ends)):
            problems.append(f"{where}: offsets {spans[:8]}... differ from Tokenize's")
        present = {pb2.HEAD_POOLED: res.HasField("pooled_output"),
                   pb2.HEAD_DEFAULT: res.HasField("default_output"),
                   pb2.HEAD_MEAN_POOLED: res.HasField("mean_pooled_output"),
                   pb2.HEAD_CLS: res.HasField("cls_output"),
                   pb2.HEAD_SEQUENCE: res.HasField("sequence_output"),
                   pb2.HEAD_ENCODER_OUTPUTS: len(res.encoder_outputs) > 0}
        for head, has in present.items():
            if has != (head in heads):
                problems.append(f"{where}: head {pb2.Head.Name(head)} present={has}")
        if len(res.encoder_outputs) != len(layers):
            problems.append(f"{where}: {len(res.encoder_outputs)} encoder outputs for "
                            f"layers {layers}")
        vectors = {}
        for head, field in [(pb2.HEAD_POOLED, "pooled_output"),
                            (pb2.HEAD_DEFAULT, "default_output"),
                            (pb2.HEAD_MEAN_POOLED, "mean_pooled_output"),
                            (pb2.HEAD_CLS, "cls_output")]:
            if head in heads and present[head]:
                v = check_tensor(problems, f"{where}.{field}", getattr(res, field), [hidden],
                                 req.output_dtype)
                if v is not None:
                    vectors[head] = v
                    norm = float(np.linalg.norm(v))
                    if req.normalize and norm > 0 and abs(norm - 1) > tol:
                        problems.append(f"{where}.{field}: norm {norm} under normalize")
        if (pb2.HEAD_POOLED in heads and pb2.HEAD_DEFAULT in heads
                and res.pooled_output.data != res.default_output.data):
            problems.append(f"{where}: default_output differs from pooled_output")
        rows = nt if trim else seq
        sequence = None
        if pb2.HEAD_SEQUENCE in heads and present[pb2.HEAD_SEQUENCE]:
            sequence = check_tensor(problems, f"{where}.sequence_output", res.sequence_output,
                                    [rows, hidden], req.output_dtype)
        if (sequence is not None and pb2.HEAD_CLS in vectors and not req.normalize
                and not res.sequence_output.data.startswith(res.cls_output.data)):
            problems.append(f"{where}: cls_output differs from sequence_output's first row")
        first_bytes = {}  # layer -> its tensor's bytes, where a layer is asked for twice
        for k, (layer, out) in enumerate(zip(layers, res.encoder_outputs)):
            if out.layer != layer:
                problems.append(f"{where}.encoder_outputs[{k}]: layer {out.layer}, want {layer}")
            values = check_tensor(problems, f"{where}.encoder_outputs[{k}]", out.output,
                                  [rows, hidden], req.output_dtype)
            if first_bytes.setdefault(out.layer, out.output.data) != out.output.data:
                problems.append(f"{where}: layer {out.layer} asked twice, different values")
            if (out.layer == lim.layers - 1 and sequence is not None and values is not None
                    and rel_err(values, sequence) > 1e-6):
                problems.append(f"{where}: sequence_output differs from the last layer's output")
        if (list(inp.tokens.input_word_ids) == CANARY_IDS and not inp.tokens.input_type_ids
                and nt == len(CANARY_IDS)):
            for head, v in vectors.items():
                if tally is not None:
                    tally.note("canary vectors compared")
                ref = canary_ref[(head, req.normalize)]
                if rel_err(v, ref) > tol:
                    problems.append(f"{where}: canary {pb2.Head.Name(head)} off by "
                                    f"{rel_err(v, ref):.2e} (batched with other inputs)")
    if tally is not None:
        tally.note("OK results checked", len(resp.results))
    return problems


def predict_tokenize(pb2, req, lim):
    errors = []
    if not req.inputs or len(req.inputs) > lim.max_inputs:
        errors.append("inputs:")
    if resolved_seq_length(req.seq_length, lim) is None:
        errors.append("seq_length")
    if req.truncation not in (0, 1, 2, 3):
        errors.append("truncation")
    if req.prompt_name:
        errors.append("prompt_name")
    if errors:
        return Expect({INVALID}, errors)
    if req.truncation == pb2.TRUNCATION_REJECT:
        return Expect({OK, INVALID}, [f"inputs[{i}]" for i in range(len(req.inputs))])
    return Expect({OK})


def resolve_tokenize(env, req, expect, label):
    """Under TRUNCATION_REJECT: the same request under TRUNCATE says which input is too long."""
    pb2 = env["pb2"]
    if expect.certain():
        return expect, []
    treq = pb2.TokenizeRequest()
    treq.CopyFrom(req)
    treq.truncation = pb2.TRUNCATION_TRUNCATE
    code, resp, details, seconds = unary(env["tokenize"], treq.SerializeToString())
    env["tally"].add("Tokenize", code, seconds, f"{label} (oracle)")
    if code != OK:
        return expect, [f"{label}: the oracle's Tokenize got {code.name}: {details!r}"]
    too_long = [i for i, e in enumerate(resp.encodings) if e.truncated]
    if too_long:
        env["tally"].note("resolved: text too long under REJECT")
        return Expect({INVALID}, [f"inputs[{too_long[0]}]"]), []
    env["tally"].note("resolved: OK")
    return Expect({OK}), []


def predict_decode(req, lim, hf):
    """The status of a DecodeRequest, and for an OK one the texts: Hugging Face tokenizers'
    decode of each input."""
    if not req.inputs or len(req.inputs) > lim.max_inputs:
        return Expect({INVALID}, ["inputs:"]), None
    if sum(len(s.ids) for s in req.inputs) > lim.max_inputs * lim.max_seq:
        return Expect({INVALID}, ["ids exceed the limit"]), None
    for i, sequence in enumerate(req.inputs):
        for j, id_ in enumerate(sequence.ids):
            if not 0 <= id_ < lim.vocab:
                return Expect({INVALID}, [f"inputs[{i}].ids[{j}]: {id_} is outside"]), None
    # The server's bound: each token kept, plus one, and 6 bytes of framing per text.
    skip = not req.keep_special_tokens
    special = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    tokens = [hf.id_to_token(id_) for s in req.inputs for id_ in s.ids]
    bound = sum(len(t.encode()) + 1 for t in tokens
                if t is not None and not (skip and t in special))
    if bound + 6 * len(req.inputs) > lim.max_message:
        return Expect({INVALID}, ["message limit: send fewer ids"]), None
    return Expect({OK}), [hf.decode(list(s.ids), skip_special_tokens=skip) for s in req.inputs]


CLS_ID, SEP_ID, PAD_ID = 101, 102, 0  # tests/data/tiny_vocab_1024.txt


def check_tokenize_ok(pb2, req, resp, lim):
    problems = []
    if len(resp.encodings) != len(req.inputs):
        return [f"{len(resp.encodings)} encodings for {len(req.inputs)} inputs"]
    seq = resolved_seq_length(req.seq_length, lim)
    for i, (inp, enc) in enumerate(zip(req.inputs, resp.encodings)):
        where = f"encodings[{i}]"
        nt = enc.num_tokens
        ids, mask, types = list(enc.input_word_ids), list(enc.input_mask), list(enc.input_type_ids)
        if not (len(ids) == len(mask) == len(types) == seq):
            problems.append(f"{where}: lengths {len(ids)}/{len(mask)}/{len(types)}, want {seq}")
            continue
        pair = inp.HasField("text_b")
        # A truncated input fills seq_length: single texts keep seq_length - 2 tokens, pairs
        # share seq_length - 3 (at seq_length 2 a pair is [CLS] [SEP], truncated).
        if not min(3 if pair else 2, seq) <= nt <= seq or (enc.truncated and nt != seq):
            problems.append(f"{where}: num_tokens {nt} truncated {enc.truncated} at {seq}")
            continue
        if pair and seq == 2 and not enc.truncated:
            problems.append(f"{where}: a pair at seq_length 2 is not marked truncated")
        if req.truncation == pb2.TRUNCATION_REJECT and enc.truncated:
            problems.append(f"{where}: truncated under TRUNCATION_REJECT")
        if mask != [1] * nt + [0] * (seq - nt) or len(enc.tokens) != nt:
            problems.append(f"{where}: mask / tokens do not match num_tokens {nt}")
        if ids[0] != CLS_ID or ids[nt - 1] != SEP_ID or any(t != PAD_ID for t in ids[nt:]):
            problems.append(f"{where}: not [CLS] ... [SEP] [PAD]...: {ids[:nt + 1]}")
        if any(not 0 <= t < lim.vocab for t in ids):
            problems.append(f"{where}: id outside the vocabulary")
        segment_a = types[:nt].count(0)
        want_types = [0] * segment_a + [1] * (nt - segment_a) + [0] * (seq - nt)
        if types != want_types or (not pair and segment_a != nt):
            problems.append(f"{where}: type ids {types[:nt]}")
        elif pair and seq >= 3 and (nt - segment_a < 1 or ids[segment_a - 1] != SEP_ID):
            problems.append(f"{where}: pair without a second segment: {types[:nt]}")
    return problems


# ---------------------------------------------------------------------------------------
# Calls
# ---------------------------------------------------------------------------------------

class Tally:
    """Client-side record of every call (status counts per method, the slowest call) and of
    what the oracle checked. Thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.notes = {}
        self.calls = 0
        self.slowest = (0.0, "")

    def add(self, method, code, seconds, label):
        with self.lock:
            key = (method, code.name)
            self.counts[key] = self.counts.get(key, 0) + 1
            self.calls += 1
            if seconds > self.slowest[0]:
                self.slowest = (seconds, f"{method} {label}")

    def note(self, what, n=1):
        with self.lock:
            self.notes[what] = self.notes.get(what, 0) + n

    def note_error(self, code, details):
        """Counts errors by the field their message names (indices and values dropped)."""
        if code != OK:
            field = re.sub(r"\d+", "N", details.split(":")[0])[:40]
            self.note(f"{code.name} {field}")


def short(message, limit=400):
    text = str(message).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def unary(call, payload, deadline=CALL_DEADLINE_S):
    """(code, response or None, details, seconds) of one unary call."""
    start = time.monotonic()
    try:
        resp = call(payload, timeout=deadline)
        return OK, resp, "", time.monotonic() - start
    except grpc.RpcError as e:
        return e.code(), None, e.details() or "", time.monotonic() - start


def judge(expect, code, details, label):
    """Problems with a call's status: documented, possible here, and as expected."""
    problems = []
    if code not in DOCUMENTED_CODES:
        problems.append(f"undocumented status {code.name}: {details!r}")
    elif code not in POSSIBLE_HERE:
        problems.append(f"status {code.name} cannot happen here: {details!r}")
    elif code not in expect.codes:
        problems.append(f"status {code.name} ({details!r}), want "
                        f"{sorted(c.name for c in expect.codes)} ({expect.needles})")
    elif (code == INVALID and expect.needles is not None
          and not any(n in details for n in expect.needles)):
        problems.append(f"INVALID_ARGUMENT {details!r} names none of {expect.needles}")
    if code != OK and not details:
        problems.append(f"{code.name} without a message")
    return [f"{label}: {p}" for p in problems]


def parse_or_none(message_type, data):
    try:
        return message_type.FromString(data)
    except DecodeError:  # the bytes are not a valid message of this type
        return None


def expect_for_embed(env, req, data, label):
    """(Expect, encodings, problems) for an Embed body `data` that Python parsed as `req`
    (None: it could not)."""
    if len(data) > MAX_MESSAGE_BYTES:
        return OVERSIZED, {}, []
    if req is None:
        return UNPARSEABLE, {}, []
    lim = env["lim"]
    max_ids = lim.max_inputs * lim.max_seq
    refused = wire_expect(data, env["pb2"].EmbedRequest, {
        "EmbedRequest.inputs": lim.max_inputs, "EmbedRequest.heads": 8,
        "EmbedRequest.layers": 2 * lim.layers, "TokenInput.input_word_ids": max_ids,
        "TokenInput.input_type_ids": max_ids})
    if refused:
        return refused, {}, []
    expect = predict_embed(env["pb2"], req, lim)
    return resolve_embed(env, req, expect, label)


def expect_for_tokenize(env, req, data, label):
    if len(data) > MAX_MESSAGE_BYTES:
        return OVERSIZED, []
    if req is None:
        return UNPARSEABLE, []
    refused = wire_expect(data, env["pb2"].TokenizeRequest,
                          {"TokenizeRequest.inputs": env["lim"].max_inputs})
    if refused:
        return refused, []
    return resolve_tokenize(env, req, predict_tokenize(env["pb2"], req, env["lim"]), label)


def describe(req, data):
    return short(req) if req is not None else repr(data[:200])


def embed_task(env, label, req, data):
    """One unary Embed of the bytes `data` (`req`: what Python parses them as, or None)."""
    pb2, lim = env["pb2"], env["lim"]

    def run():
        expect, encodings, problems = expect_for_embed(env, req, data, label)
        code, resp, details, seconds = unary(env["embed"], data)
        env["tally"].add("Embed", code, seconds, label)
        env["tally"].note_error(code, details)
        problems += judge(expect, code, details, label)
        if code == OK and req is not None:
            problems += [f"{label}: {p}" for p in check_embed_ok(
                pb2, req, resp, lim, env["canary_ref"], encodings, env["tally"])]
        if problems:
            problems.append(f"{label} request: {describe(req, data)}")
        return problems
    return run


def tokenize_task(env, label, req, data):
    pb2, lim = env["pb2"], env["lim"]

    def run():
        expect, problems = expect_for_tokenize(env, req, data, label)
        code, resp, details, seconds = unary(env["tokenize"], data)
        env["tally"].add("Tokenize", code, seconds, label)
        env["tally"].note_error(code, details)
        problems += judge(expect, code, details, label)
        if code == OK and req is not None:
            problems += [f"{label}: {p}" for p in check_tokenize_ok(pb2, req, resp, lim)]
        if problems:
            problems.append(f"{label} request: {describe(req, data)}")
        return problems
    return run


def decode_task(env, label, req, data):
    def run():
        problems, texts = [], None
        if len(data) > MAX_MESSAGE_BYTES:
            expect = OVERSIZED
        elif req is None:
            expect = UNPARSEABLE
        else:
            lim = env["lim"]
            expect = wire_expect(data, env["pb2"].DecodeRequest,
                                 {"DecodeRequest.inputs": lim.max_inputs,
                                  "TokenIds.ids": lim.max_inputs * lim.max_seq})
            if expect is None:
                expect, texts = predict_decode(req, lim, env["hf"])
        code, resp, details, seconds = unary(env["decode"], data)
        env["tally"].add("Decode", code, seconds, label)
        env["tally"].note_error(code, details)
        problems += judge(expect, code, details, label)
        if code == OK and texts is not None and list(resp.texts) != texts:
            wrong = next(i for i, (a, b) in enumerate(zip(resp.texts, texts)) if a != b) \
                if len(resp.texts) == len(texts) else "count"
            problems.append(f"{label}: texts differ from Hugging Face's (input {wrong})")
        if problems:
            problems.append(f"{label} request: {describe(req, data)}")
        return problems
    return run


def echoed_request_id(pb2, req, resp):
    """The request_id a stream answer must carry: the request's, except in an error that
    could not carry it under the message limit (server/README.md, "Errors")."""
    if not resp.HasField("error"):
        return req.request_id
    full = pb2.EmbedResponse(request_id=req.request_id, error=resp.error)
    return req.request_id if full.ByteSize() <= MAX_MESSAGE_BYTES else ""


def stream_task(env, label, messages):
    """One EmbedStream session; `messages` are (EmbedRequest or None, bytes) pairs, None where
    Python cannot parse the bytes. Each answer is judged like a unary Embed's status."""
    pb2, lim = env["pb2"], env["lim"]

    def run():
        problems, expected = [], []
        for k, (req, data) in enumerate(messages):
            expect, encodings, found = expect_for_embed(env, req, data, f"{label}[{k}]")
            expected.append((expect, encodings))
            problems += found
        start = time.monotonic()
        try:
            answers = list(env["stream"](iter([data for _, data in messages]),
                                         timeout=STREAM_DEADLINE_S))
        except grpc.RpcError as e:
            return problems + [f"{label}: the stream ended with {e.code().name}: {e.details()!r}"]
        if len(answers) != len(messages):
            return problems + [f"{label}: {len(answers)} answers to {len(messages)} messages"]
        per_message = (time.monotonic() - start) / max(1, len(messages))
        for k, ((req, data), (expect, encodings), resp) in enumerate(
                zip(messages, expected, answers)):
            where = f"{label}[{k}]"
            code = OK
            if resp.HasField("error"):
                code = next((c for c in grpc.StatusCode if c.value[0] == resp.error.code),
                            grpc.StatusCode.UNKNOWN)
            env["tally"].add("EmbedStream", code, per_message, where)
            env["tally"].note_error(code, resp.error.message)
            found = judge(expect, code, resp.error.message, where)
            if req is not None and resp.request_id != echoed_request_id(pb2, req, resp):
                found.append(f"{where}: request_id {short(resp.request_id, 40)!r}, want "
                             f"{short(echoed_request_id(pb2, req, resp), 40)!r} "
                             "(answers out of order?)")
            if code == OK and req is not None:
                found += [f"{where}: {p}" for p in check_embed_ok(
                    pb2, req, resp, lim, env["canary_ref"], encodings, env["tally"])]
            if found:
                found.append(f"{where} request: {describe(req, data)}")
            problems += found
        return problems
    return run


# ---------------------------------------------------------------------------------------
# Fixture and helpers
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz():
    """The server, its limits, the generator, the canary's reference vectors and a known
    request's answer taken before any fuzzing."""
    pb2, _ = stubs()
    print(f"\nBERT_FUZZ_SEED={SEED}")
    server = Server(metrics=True, extra=[f"--max_inputs_per_request={MAX_INPUTS}",
                                         f"--max_message_bytes={MAX_MESSAGE_BYTES}",
                                         f"--max_concurrent_requests={MAX_CONCURRENT}"])
    try:
        channel = server.channel()
        stub = server.stub(channel)
        info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=CALL_DEADLINE_S)
        lim = Limits(info)
        assert lim.max_inputs == MAX_INPUTS and lim.max_message == MAX_MESSAGE_BYTES
        assert info.config.has_pooler and info.backend == "cpu"
        canary_ref = {}
        vector_heads = [pb2.HEAD_POOLED, pb2.HEAD_DEFAULT, pb2.HEAD_MEAN_POOLED, pb2.HEAD_CLS]
        for normalize in (False, True):
            req = pb2.EmbedRequest(
                inputs=[pb2.Input(tokens=pb2.TokenInput(input_word_ids=CANARY_IDS))],
                heads=vector_heads, normalize=normalize)
            res = stub.Embed(req, timeout=CALL_DEADLINE_S).results[0]
            for head, field in zip(vector_heads, ["pooled_output", "default_output",
                                                  "mean_pooled_output", "cls_output"]):
                canary_ref[(head, normalize)] = decode(getattr(res, field))
        known = known_request(pb2)
        # Bodies go over the wire as bytes: raw fuzz needs it, and it keeps one code path.
        raw = dict(request_serializer=None)
        yield {
            "pb2": pb2, "server": server, "stub": stub, "lim": lim,
            "gen": Gen(random.Random(SEED), pb2, info), "canary_ref": canary_ref,
            "embed": channel.unary_unary("/bert.v1.BertService/Embed", **raw,
                                         response_deserializer=pb2.EmbedResponse.FromString),
            "tokenize": channel.unary_unary(
                "/bert.v1.BertService/Tokenize", **raw,
                response_deserializer=pb2.TokenizeResponse.FromString),
            "decode": channel.unary_unary(
                "/bert.v1.BertService/Decode", **raw,
                response_deserializer=pb2.DecodeResponse.FromString),
            "hf": BertWordPieceTokenizer(models.WordPiece.read_file(TINY_VOCAB), lowercase=True),
            "stream": channel.stream_stream("/bert.v1.BertService/EmbedStream", **raw,
                                            response_deserializer=pb2.EmbedResponse.FromString),
            "known": known, "known_answer": without_timing(stub.Embed(known, timeout=10)),
            "metrics_before": server.metrics_text(), "tally": Tally(), "started": time.time(),
        }
        channel.close()
    finally:
        server.kill()


def known_request(pb2):
    text = pb2.Input(text=pb2.TextInput(text_a="the quick brown fox", text_b="jumps"))
    tokens = pb2.Input(tokens=pb2.TokenInput(input_word_ids=[101, 7, 8, 9, 102],
                                             input_type_ids=[0, 0, 1, 1, 1]))
    return pb2.EmbedRequest(inputs=[text, tokens], seq_length=12, layers=[0, -1],
                            heads=[pb2.HEAD_POOLED, pb2.HEAD_SEQUENCE, pb2.HEAD_ENCODER_OUTPUTS,
                                   pb2.HEAD_DEFAULT, pb2.HEAD_MEAN_POOLED, pb2.HEAD_CLS],
                            normalize=True, request_id="known")


def without_timing(resp):
    resp.ClearField("timing")
    for r in resp.results:
        r.ClearField("timing")
    return resp.SerializeToString(deterministic=True)


def run_all(tasks, env):
    """Runs the tasks (functions returning problems) on THREADS threads; fails on any
    problem. Tasks not started within TIME_BUDGET_S are not run (and the count is printed),
    so a slow machine shortens the fuzz rather than the deadline killing it."""
    start = time.monotonic()
    not_run = []

    def run(task):
        if time.monotonic() - start > TIME_BUDGET_S:
            not_run.append(task)
            return []
        return task()

    with ThreadPoolExecutor(THREADS) as pool:
        problems = [p for found in pool.map(run, tasks) for p in found]
    tally = env["tally"]
    print(f"{len(tasks) - len(not_run)} of {len(tasks)} tasks run "
          f"({len(not_run)} past the {TIME_BUDGET_S} s budget), {tally.calls} calls so far, "
          f"{time.monotonic() - start:.1f} s; slowest call {tally.slowest[0]:.2f} s "
          f"({tally.slowest[1]})")
    assert env["server"].proc.poll() is None, f"server died:\n{env['server'].log()[-4000:]}"
    assert not problems, (f"BERT_FUZZ_SEED={SEED}: {len(problems)} problems:\n"
                          + "\n".join(problems[:20]))


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------

def stream_messages(gen, make_message):
    """2..MESSAGES_PER_STREAM (request, bytes) pairs from make_message() for one EmbedStream,
    leaving out any over MAX_MESSAGE_BYTES: an oversized message ends the whole stream."""
    messages = []
    for _ in range(gen.rng.randint(2, MESSAGES_PER_STREAM)):
        req, data = make_message()
        if len(data) <= MAX_MESSAGE_BYTES:
            messages.append((req, data))
    return messages


def test_oracle_catches_wrong_answers(fuzz):
    """The oracle itself: a real answer passes, and each way of spoiling it is reported."""
    pb2, lim, tally = fuzz["pb2"], fuzz["lim"], fuzz["tally"]
    req = known_request(pb2)
    req.inputs.append(pb2.Input(tokens=pb2.TokenInput(input_word_ids=CANARY_IDS)))
    req.padding = pb2.PADDING_TRIM
    label = "oracle-self-test"
    expect, encodings, problems = expect_for_embed(fuzz, req, req.SerializeToString(), label)
    assert not problems and expect.codes == {OK}
    code, resp, details, seconds = unary(fuzz["embed"], req.SerializeToString())
    tally.add("Embed", code, seconds, label)
    assert code == OK, details

    def check(r):
        return check_embed_ok(pb2, req, r, lim, fuzz["canary_ref"], encodings)

    assert check(resp) == []
    spoilers = {
        "a result missing": lambda r: r.results.pop(),
        "request_id": lambda r: setattr(r, "request_id", "other"),
        "num_tokens": lambda r: setattr(r.results[0], "num_tokens", r.results[0].num_tokens - 1),
        "truncated": lambda r: setattr(r.results[1], "truncated", True),
        "a head missing": lambda r: r.results[0].ClearField("mean_pooled_output"),
        "a layer not asked for": lambda r: r.results[0].encoder_outputs.add().CopyFrom(
            r.results[0].encoder_outputs[0]),
        "padded rows under TRIM": lambda r: r.results[1].sequence_output.shape.__setitem__(
            0, req.seq_length),
        "dtype": lambda r: setattr(r.results[1].pooled_output, "dtype", pb2.DATA_TYPE_FLOAT16),
        "NaN": lambda r: setattr(r.results[1].mean_pooled_output, "data",
                                 np.full(lim.hidden, np.nan, "<f4").tobytes()),
        "layer index": lambda r: setattr(r.results[0].encoder_outputs[0], "layer", 2),
        "not normalized": lambda r: setattr(r.results[0].pooled_output, "data",
                                            (decode(r.results[0].pooled_output) * 2).tobytes()),
        "default != pooled": lambda r: setattr(r.results[1].default_output, "data",
                                               r.results[0].default_output.data),
        "canary from another input": lambda r: setattr(r.results[2].mean_pooled_output, "data",
                                                       r.results[1].mean_pooled_output.data),
    }
    for name, spoil in spoilers.items():
        spoilt = pb2.EmbedResponse()
        spoilt.CopyFrom(resp)
        spoil(spoilt)
        assert check(spoilt), f"the oracle missed: {name}"
    for code in [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                 grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE]:
        assert judge(Expect({OK, INVALID}), code, "boom", "x"), code
    assert judge(Expect({INVALID}, ["layers[1]"]), OK, "", "x")
    assert judge(Expect({INVALID}, ["layers[1]"]), INVALID, "heads[0]: unknown value 9", "x")
    assert judge(Expect({INVALID}, ["layers[1]"]), INVALID, "", "x")
    assert judge(Expect({OK}), grpc.StatusCode.RESOURCE_EXHAUSTED, "at its limit", "x")
    assert not judge(Expect({INVALID}, ["layers[1]"]), INVALID, "layers[1]: 9 is outside", "x")


def test_structured_fuzz(fuzz):
    """Random Embed / Tokenize / Decode requests and EmbedStream sessions, 4 threads at
    once."""
    gen = fuzz["gen"]
    tasks = []
    for i in range(NUM_EMBED):
        req = gen.embed_request(gen.badness())
        tasks.append(embed_task(fuzz, f"embed#{i}", req, req.SerializeToString()))
    for i in range(NUM_TOKENIZE):
        req = gen.tokenize_request(gen.badness())
        tasks.append(tokenize_task(fuzz, f"tokenize#{i}", req, req.SerializeToString()))
    for i in range(NUM_DECODE):
        req = gen.decode_request(gen.badness())
        tasks.append(decode_task(fuzz, f"decode#{i}", req, req.SerializeToString()))

    def stream_message():
        req = gen.embed_request(gen.badness())
        return req, req.SerializeToString()

    for s in range(NUM_STREAMS):
        tasks.append(stream_task(fuzz, f"stream#{s}", stream_messages(gen, stream_message)))
    gen.rng.shuffle(tasks)
    run_all(tasks, fuzz)


def test_raw_fuzz(fuzz):
    """Random bytes and mutated serialized requests as Embed / Tokenize / Decode bodies and as
    EmbedStream messages. Where Python's protobuf runtime parses the bytes, the server must
    answer them as that request; where it cannot, with INVALID_ARGUMENT."""
    pb2, gen = fuzz["pb2"], fuzz["gen"]

    def body(message_type, valid):
        data = gen.raw_bytes() if gen.chance(0.3) else gen.mutate(valid.SerializeToString())
        return parse_or_none(message_type, data), data

    def embed_body():
        return body(pb2.EmbedRequest, gen.embed_request(gen.rng.choice([0.0, 0.05]), canary=False))

    tasks = []
    for i in range(NUM_RAW):
        if gen.chance(0.5):
            tasks.append(embed_task(fuzz, f"raw-embed#{i}", *embed_body()))
        elif gen.chance(0.3):
            valid = gen.decode_request(gen.rng.choice([0.0, 0.05]))
            tasks.append(decode_task(fuzz, f"raw-decode#{i}", *body(pb2.DecodeRequest, valid)))
        else:
            valid = gen.tokenize_request(gen.rng.choice([0.0, 0.05]))
            tasks.append(tokenize_task(fuzz, f"raw-tokenize#{i}",
                                       *body(pb2.TokenizeRequest, valid)))
    def stream_message():
        if gen.chance(0.6):
            return embed_body()
        req = gen.embed_request(0.0)
        return req, req.SerializeToString()

    for s in range(NUM_STREAMS // 2):
        tasks.append(stream_task(fuzz, f"raw-stream#{s}", stream_messages(gen, stream_message)))
    gen.rng.shuffle(tasks)
    run_all(tasks, fuzz)


def test_server_intact_after_fuzz(fuzz):
    """Alive, SERVING, the known request's answer unchanged to the bit, and /metrics counts
    each call the fuzz made under the status the client saw."""
    server, stub = fuzz["server"], fuzz["stub"]
    assert server.proc.poll() is None, server.log()[-4000:]
    assert server.health() == "SERVING"
    assert server.health("bert.v1.BertService") == "SERVING"
    tally = fuzz["tally"]
    # Two calls of its own, so that the comparison below is never empty (run alone, no fuzz
    # test has made a call before it).
    for request, want in ((fuzz["known"], OK), (fuzz["pb2"].EmbedRequest(), INVALID)):
        try:
            stub.Embed(request, timeout=CALL_DEADLINE_S)
            code = OK
        except grpc.RpcError as e:
            code = e.code()
        assert code == want, code
        tally.add("Embed", code, 0.0, "intact check")
    after, before = server.metrics_text(), fuzz["metrics_before"]
    mismatches = []
    for method in ("Embed", "Tokenize", "Decode", "EmbedStream"):
        for code in grpc.StatusCode:
            labels = {"method": method, "code": code.name}
            served = ((metric_value(after, "bert_requests_total", labels) or 0)
                      - (metric_value(before, "bert_requests_total", labels) or 0))
            sent = tally.counts.get((method, code.name), 0)
            # gRPC refuses a request over --max_message_bytes before the service sees it,
            # and nothing else may be RESOURCE_EXHAUSTED here: the server counts none.
            want = 0 if code == grpc.StatusCode.RESOURCE_EXHAUSTED else sent
            if served != want:
                mismatches.append(f"{method} {code.name}: server counted {served}, want {want}")
    assert not mismatches, mismatches
    answer = without_timing(stub.Embed(fuzz["known"], timeout=CALL_DEADLINE_S))
    assert answer == fuzz["known_answer"], "the known request's answer changed after the fuzz"
    print(f"{tally.calls} calls in {time.time() - fuzz['started']:.1f} s; by status: "
          + ", ".join(f"{m} {c}={n}" for (m, c), n in sorted(tally.counts.items())))
    print("oracle and errors:\n  "
          + "\n  ".join(f"{k}: {n}" for k, n in sorted(tally.notes.items())))
