#!/usr/bin/env python3
"""Writes tests/data/tiny_vocab_1024.txt: a 1024-token WordPiece vocabulary for the tiny
golden model (tests/golden/tiny-l4-h128, vocab_size 1024), laid out like BERT's:
[PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103, then single characters,
their ## continuations, common word pieces and common English words.

    .venv/bin/python tests/data/make_tiny_vocab.py  # regenerates the committed file
"""
import os
import string

SIZE = 1024

WORDS = """the of and to a in is you that it he was for on are as with his they i at be
this have from or one had by word but not what all were we when your can said there use
an each which she do how their if will up other about out many then them these so some
her would make like him into time has look two more write go see number no way could
people my than first water been call who oil its now find long down day did get come made
may part please subscribe newsletter being offered job role hello world good morning
evening night thank thanks yes sorry new old big small great little own right left high
low last next early late young important few public bad same able work life hand place
case week company system program question government point home school state family
student group country problem fact money story month lot study book eye word business
issue side kind head house service friend father power hour game line end member law car
city community name president team minute idea kid body information back parent face
others level office door health person art war history party result change reason
research girl guy moment air teacher force education foot boy age policy music process
market sense nation plan college interest death experience effect class control care
field development role effort rate heart drug show leader light voice wife police mind
price report decision son view relationship town road arm difference value building action
model season society tax director position player record paper space ground form event
official matter center couple site project activity star table need court american oil
situation cost industry figure street image phone data picture practice piece land product
doctor wall patient worker news test movie north love support technology step baby
computer type attention film tree source organization hair window evidence population site
sentence embedding search query document text language model server client request
response batch token vector neural network learning machine deep data train input output
""".split()

PIECES = """ing ed er es s ly tion ment ness able ful less est al ic ive ous ity ize ise en
ion ent ant ence ance ers ings""".split()


def main():
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)]
    tokens += ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase) + list(string.digits) + list(string.punctuation)
    tokens += chars
    tokens += ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens += ["##" + p for p in PIECES]
    seen = set(tokens)
    for w in WORDS:
        if w not in seen and len(tokens) < SIZE:
            tokens.append(w)
            seen.add(w)
    # Fill the rest with two-letter continuation pieces, deterministically.
    for a in string.ascii_lowercase:
        for b in string.ascii_lowercase:
            piece = "##" + a + b
            if len(tokens) < SIZE and piece not in seen:
                tokens.append(piece)
                seen.add(piece)
    assert len(tokens) == SIZE, len(tokens)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_vocab_1024.txt")
    with open(out, "w") as f:
        f.write("\n".join(tokens) + "\n")


if __name__ == "__main__":
    main()
