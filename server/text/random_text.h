// Test-only: random texts that exercise every tokenizer path, for tests that compare two ways
// of tokenizing or packing the same text. Deterministic for a given generator state.
#ifndef BERT_SERVER_TEXT_RANDOM_TEXT_H_
#define BERT_SERVER_TEXT_RANDOM_TEXT_H_

#include <random>
#include <string>

namespace bert {
namespace text_testing {

// Up to `max_fragments` fragments: words the bert-base-uncased vocabulary splits into many
// pieces, words over 100 characters, unknown words, CJK, accents (precomposed and combining),
// combining marks that NFD reorders, punctuation (ASCII and Unicode), control and format
// characters, NUL, Unicode spaces, emoji, with and without whitespace between them.
inline std::string RandomText(std::mt19937* rng, int max_fragments) {
  static const std::string kFragments[] = {"hello",
                                           "world",
                                           "unaffable",
                                           "tokenization",
                                           "Crème",
                                           "brûlée",
                                           "naïve",
                                           "e\u0301",
                                           "\u0130stanbul",
                                           "ΣΊΣΥΦΟΣ",
                                           "我爱北京天安门",
                                           "ab北cd",
                                           "\u4e2d",
                                           "$100.50",
                                           "@user",
                                           "#tag",
                                           "[MASK]",
                                           "«quote»—dash…",
                                           "a\u037eb",
                                           "x\u200by",
                                           std::string("n\0ul", 4),
                                           "\x01",
                                           "\x7f",
                                           "\t",
                                           "\n",
                                           "\r",
                                           "\u3000",
                                           "\u00a0",
                                           "\u2764",
                                           "\U0001F600",
                                           "\U0001D165\u0301\U0001D16D",
                                           "a\U0001D16D\U0001D165\U00016FF0",
                                           "\U0001D15E",
                                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                           "xqzjvkwpxqzjvkwp",
                                           "Supercalifragilistic",
                                           "ÀÉÎÕÜ",
                                           "ǅ",
                                           "ß",
                                           "ＡＢＣ",
                                           "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"};
  constexpr int kNumFragments = sizeof(kFragments) / sizeof(kFragments[0]);
  std::uniform_int_distribution<int> count(0, max_fragments);
  std::uniform_int_distribution<int> pick(0, kNumFragments - 1);
  std::uniform_int_distribution<int> coin(0, 3);
  std::string text;
  const int n = count(*rng);
  for (int i = 0; i < n; ++i) {
    switch (coin(*rng)) {
      case 0:
        break;  // Glued to the previous fragment.
      case 1:
        text += "  ";
        break;
      default:
        text += ' ';
        break;
    }
    if (coin(*rng) == 0 && i % 7 == 3) {
      text += std::string(95 + coin(*rng) * 3, 'b');  // Around the 100-character limit.
    } else {
      text += kFragments[pick(*rng)];
    }
  }
  return text;
}

}  // namespace text_testing
}  // namespace bert

#endif  // BERT_SERVER_TEXT_RANDOM_TEXT_H_
