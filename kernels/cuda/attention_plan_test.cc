// Host-side checks of the attention kernels' index math (attention_plan.h), run in CI without
// a GPU: the launch plan covers every (row, head) exactly once, the cooperative tile copies
// cover every 16-byte chunk exactly once, and the mma.sync fragment bookkeeping (Q/K loads,
// S accumulators reused as the A operand of P·V, ldmatrix.trans for V) composes into the
// right products when the warp-level instructions are emulated as the PTX ISA defines them.
#include "kernels/cuda/attention_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

namespace bert::cuda::attention_plan {
namespace {

constexpr int kLanes = 32;

// Enumerates every CTA of every launch chunk the way the kernels interpret blockIdx and
// counts how often each (row, head) is computed.
std::vector<int> Coverage(const std::vector<int32_t>& cu, int max_rows, int num_heads,
                          int block_m) {
  const int num_seqs = static_cast<int>(cu.size()) - 1;
  std::vector<int> hits(static_cast<size_t>(cu.back()) * num_heads, 0);
  for (int c = 0; c < NumChunks(num_seqs); ++c) {
    const GridDims g = ChunkGrid(c, num_seqs, max_rows, num_heads, block_m);
    EXPECT_GT(g.z, 0);
    EXPECT_LE(g.z, kMaxGridZ);
    for (int z = 0; z < g.z; ++z) {
      const int seq = ChunkSeqBegin(c) + z;
      EXPECT_LT(seq, num_seqs);
      if (seq >= num_seqs) continue;
      const int seq_rows = cu[seq + 1] - cu[seq];
      for (int x = 0; x < g.x; ++x) {
        const RowRange r = QueryTileRows(x, seq_rows, block_m);
        if (r.begin >= r.end) continue;
        EXPECT_LE(r.end - r.begin, block_m);
        EXPECT_GE(r.begin, 0);
        EXPECT_LE(r.end, seq_rows);
        for (int y = 0; y < g.y; ++y) {
          for (int row = r.begin; row < r.end; ++row) ++hits[(cu[seq] + row) * num_heads + y];
        }
      }
    }
  }
  return hits;
}

void ExpectExactlyOnce(const std::vector<int32_t>& rows, int num_heads, int block_m) {
  std::vector<int32_t> cu(rows.size() + 1, 0);
  int max_rows = 0;
  for (size_t s = 0; s < rows.size(); ++s) {
    cu[s + 1] = cu[s] + rows[s];
    max_rows = std::max(max_rows, rows[s]);
  }
  const std::vector<int> hits = Coverage(cu, max_rows, num_heads, block_m);
  int wrong = 0;
  for (size_t i = 0; i < hits.size(); ++i) {
    if (hits[i] != 1 && ++wrong <= 5) {
      ADD_FAILURE() << "row " << i / num_heads << " head " << i % num_heads << " computed "
                    << hits[i] << " times";
    }
  }
  EXPECT_EQ(wrong, 0);
}

TEST(AttentionPlan, EveryRowAndHeadExactlyOnce) {
  std::mt19937 rng(std::random_device{}());
  for (int block_m : {16, 32, 64}) {
    ExpectExactlyOnce({1}, 12, block_m);
    ExpectExactlyOnce({1, 1, 1}, 3, block_m);
    ExpectExactlyOnce({7, 33, 65, 129, 1, 63, 64, 128, 512, 513}, 12, block_m);
    std::vector<int32_t> random_rows(500);
    for (auto& r : random_rows) r = std::uniform_int_distribution<int>(0, 700)(rng);
    ExpectExactlyOnce(random_rows, 5, block_m);
  }
}

TEST(AttentionPlan, MoreSequencesThanOneGridHolds) {
  std::vector<int32_t> rows(2 * kMaxGridZ + 17, 1);
  rows[kMaxGridZ - 1] = 3;
  rows[kMaxGridZ] = 2;
  EXPECT_EQ(NumChunks(static_cast<int>(rows.size())), 3);
  ExpectExactlyOnce(rows, 1, 64);
}

TEST(AttentionPlan, NumKeysClamps) {
  EXPECT_EQ(NumKeys(5, 10), 5);
  EXPECT_EQ(NumKeys(10, 10), 10);
  EXPECT_EQ(NumKeys(11, 10), 10);
  EXPECT_EQ(NumKeys(0, 10), 0);
  EXPECT_EQ(NumKeys(-1, 10), 0);
}

TEST(AttentionPlan, Offsets) {
  // hidden = 4 * 64 = 256; qkv rows are 768 wide.
  EXPECT_EQ(QkvOffset(0, 0, 0, 0, 4, 64), 0);
  EXPECT_EQ(QkvOffset(2, 1, 3, 5, 4, 64), 2 * 768 + 256 + 3 * 64 + 5);
  EXPECT_EQ(QkvOffset(100000, 2, 0, 0, 4, 64), int64_t{100000} * 768 + 512);
  EXPECT_EQ(OutOffset(3, 2, 7, 4, 64), 3 * 256 + 2 * 64 + 7);
  EXPECT_EQ(OutOffset(int64_t{1} << 22, 0, 0, 12, 128), (int64_t{1} << 22) * 1536);
}

// Checks a cooperative copy of a [rows, d] tile by `threads` threads the way the kernels run
// it: CopySteps steps, each thread's chunks advancing by whole rows; every chunk exactly once.
void ExpectCopyCoversTileOnce(int rows, int d, int threads) {
  SCOPED_TRACE("rows " + std::to_string(rows) + " d " + std::to_string(d) + " threads " +
               std::to_string(threads));
  constexpr int kVec = kMmaVec;
  ASSERT_TRUE(CopySplitsEvenly(rows, d, kVec, threads));
  ASSERT_TRUE(CopyRowsAdvanceEvenly(d, kVec, threads));
  const int steps = CopySteps(rows, d, kVec, threads);
  ASSERT_EQ(steps * threads * kVec, rows * d);
  const int rows_per_step = CopyRowsPerStep(d, kVec, threads);
  std::vector<int> hits(rows * d / kVec, 0);
  for (int step = 0; step < steps; ++step) {
    for (int t = 0; t < threads; ++t) {
      const TileChunk c = CopyChunk(step, t, threads, d, kVec);
      // The kernels' incremental form of the same chunk.
      const TileChunk c0 = CopyChunk(0, t, threads, d, kVec);
      ASSERT_EQ(c.row, c0.row + step * rows_per_step);
      ASSERT_EQ(c.col, c0.col);
      ASSERT_GE(c.row, 0);
      ASSERT_LT(c.row, rows);
      ASSERT_EQ(c.col % kVec, 0);
      ASSERT_LT(c.col, d);
      ++hits[(c.row * d + c.col) / kVec];
    }
  }
  for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i], 1) << "chunk " << i;
}

// Q tile (and the output staged in it), K and V tiles, for every tile height and head dim.
TEST(AttentionPlan, TileCopiesCoverEveryChunkOnce) {
  for (int warps : {1, 2, 4}) {
    ASSERT_TRUE(IsSupportedMmaWarps(warps));
    for (int d : {32, 64, 128}) {
      ExpectCopyCoversTileOnce(MmaBlockM(warps), d, MmaThreads(warps));
      ExpectCopyCoversTileOnce(kMmaBlockN, d, MmaThreads(warps));
    }
  }
  EXPECT_FALSE(IsSupportedMmaWarps(3));
  EXPECT_FALSE(IsSupportedMmaWarps(8));
}

// Each warp owns 16 tile rows; together the warps own every row of the tile exactly once.
TEST(AttentionPlan, WarpsOwnEveryTileRowOnce) {
  for (int warps : {1, 2, 4}) {
    std::vector<int> hits(MmaBlockM(warps), 0);
    for (int w = 0; w < warps; ++w) {
      for (int lane = 0; lane < kLanes; ++lane) {
        for (int e = 0; e < 4; ++e) {
          const int row = w * kMmaRowsPerWarp + AccRow(lane, e);
          ASSERT_LT(row, MmaBlockM(warps));
          if (AccCol(lane, e) == 0) ++hits[row];  // count each row once, via its column 0
        }
      }
    }
    for (int x : hits) EXPECT_EQ(x, 1) << "warps " << warps;
  }
}

// The tensor-core kernel's output stores: every CTA of every launch chunk runs the store loop
// (CopyChunk over its 16 * warps-row tile, rows past the sequence skipped); each
// (row, head, 16-byte column chunk) of the output must be written exactly once.
TEST(AttentionPlan, MmaOutputStoresCoverEveryElementOnce) {
  std::mt19937 rng(std::random_device{}());
  std::vector<int32_t> rows = {1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 128, 129, 200};
  for (int i = 0; i < 40; ++i) rows.push_back(std::uniform_int_distribution<int>(1, 300)(rng));
  std::vector<int32_t> cu(rows.size() + 1, 0);
  for (size_t s = 0; s < rows.size(); ++s) cu[s + 1] = cu[s] + rows[s];
  const int max_rows = *std::max_element(rows.begin(), rows.end()) + 5;  // oversized grid
  const int num_seqs = static_cast<int>(rows.size());
  constexpr int kHeads = 3;
  for (int warps : {1, 2, 4}) {
    for (int d : {32, 64, 128}) {
      SCOPED_TRACE("warps " + std::to_string(warps) + " d " + std::to_string(d));
      const int block_m = MmaBlockM(warps), threads = MmaThreads(warps);
      const int chunks_per_row = kHeads * d / kMmaVec;
      std::vector<int> hits(static_cast<size_t>(cu.back()) * chunks_per_row, 0);
      for (int c = 0; c < NumChunks(num_seqs); ++c) {
        const GridDims g = ChunkGrid(c, num_seqs, max_rows, kHeads, block_m);
        for (int z = 0; z < g.z; ++z) {
          const int seq = ChunkSeqBegin(c) + z;
          for (int x = 0; x < g.x; ++x) {
            const RowRange q = QueryTileRows(x, cu[seq + 1] - cu[seq], block_m);
            if (q.begin >= q.end) continue;
            for (int y = 0; y < g.y; ++y) {
              for (int step = 0; step < CopySteps(block_m, d, kMmaVec, threads); ++step) {
                for (int t = 0; t < threads; ++t) {
                  const TileChunk ch = CopyChunk(step, t, threads, d, kMmaVec);
                  const int row = q.begin + ch.row;
                  if (row >= q.end) continue;
                  const int64_t off = OutOffset(cu[seq] + row, y, ch.col, kHeads, d);
                  ASSERT_EQ(off % kMmaVec, 0);
                  ++hits[off / kMmaVec];
                }
              }
            }
          }
        }
      }
      int wrong = 0;
      for (size_t i = 0; i < hits.size(); ++i) {
        if (hits[i] != 1 && ++wrong <= 5) {
          ADD_FAILURE() << "output chunk " << i << " written " << hits[i] << " times";
        }
      }
      EXPECT_EQ(wrong, 0);
    }
  }
}

TEST(AttentionPlan, MmaSharedMemoryFollowsTileHeight) {
  constexpr int kPad = 8;
  // 64-row tiles: the sizes in bench/NOTES_attention.md.
  EXPECT_EQ(MmaSharedBytes(4, 32, kPad), 15360);
  EXPECT_EQ(MmaSharedBytes(4, 64, kPad), 27648);
  EXPECT_EQ(MmaSharedBytes(4, 128, kPad), 52224);
  // Q tile of 32 / 16 rows, K and V of 64 rows each.
  EXPECT_EQ(MmaSharedBytes(2, 64, kPad), (32 + 128) * 72 * 2);
  EXPECT_EQ(MmaSharedBytes(1, 64, kPad), (16 + 128) * 72 * 2);
  EXPECT_EQ(MmaSharedBytes(1, 128, kPad), (16 + 128) * 136 * 2);
  // Two K/V stages (double_buffer_kv): Q + 2 x (K + V). BERT-base's 64-row tile stays under
  // the 48 KB that needs no opt-in; head_dim 128 opts in (87 KB).
  EXPECT_EQ(MmaSharedBytes(4, 64, kPad, 2), (64 + 256) * 72 * 2);
  EXPECT_LE(MmaSharedBytes(4, 64, kPad, 2), 48 * 1024);
  EXPECT_EQ(MmaSharedBytes(4, 128, kPad, 2), (64 + 256) * 136 * 2);
  EXPECT_EQ(MmaSharedBytes(4, 64, kPad, 1), MmaSharedBytes(4, 64, kPad));
  for (int d : {32, 64, 128}) {
    EXPECT_LT(MmaSharedBytes(1, d, kPad), MmaSharedBytes(2, d, kPad));
    EXPECT_LT(MmaSharedBytes(2, d, kPad), MmaSharedBytes(4, d, kPad));
  }
}

TEST(AttentionPlan, LaunchRuleOnAnH200) {
  constexpr int kSms = 132, kHeads = 12;  // H200; BERT-base heads
  // batch x 128 tokens. 64-row grid: 24, 192, 768, 3072 CTAs against 2 x 132 = 264.
  EXPECT_EQ(ChooseMmaWarps(1, 128, kHeads, kSms), 1);    // 32-row: 48, 16-row: 96 CTAs
  EXPECT_EQ(ChooseMmaWarps(8, 128, kHeads, kSms), 2);    // 32-row: 384 CTAs
  EXPECT_EQ(ChooseMmaWarps(32, 128, kHeads, kSms), 4);   // 768 CTAs
  EXPECT_EQ(ChooseMmaWarps(128, 128, kHeads, kSms), 4);  // 3072 CTAs
  EXPECT_EQ(ChooseMmaWarps(11, 128, kHeads, kSms), 4);   // 264: exactly 2 per SM
  EXPECT_EQ(ChooseMmaWarps(10, 128, kHeads, kSms), 2);   // 240; 32-row: 480
  // Unknown SM count: the 64-row tile, as before the rule existed.
  EXPECT_EQ(ChooseMmaWarps(1, 128, kHeads, 0), 4);
  // Sequences no longer than a shorter tile never get a taller one (its extra warps would
  // only compute zero-filled rows), however large the batch.
  EXPECT_EQ(ChooseMmaWarps(100000, 16, kHeads, kSms), 1);
  EXPECT_EQ(ChooseMmaWarps(100000, 32, kHeads, kSms), 2);
  EXPECT_EQ(ChooseMmaWarps(100000, 33, kHeads, kSms), 4);
}

TEST(AttentionPlan, LaunchRuleProperties) {
  for (int sms : {1, 78, 108, 132}) {
    for (int heads : {1, 12, 16}) {
      for (int max_rows : {1, 16, 17, 32, 40, 64, 65, 128, 512}) {
        int previous = 1;
        for (int seqs = 1; seqs <= 400; ++seqs) {
          const int w = ChooseMmaWarps(seqs, max_rows, heads, sms);
          ASSERT_TRUE(IsSupportedMmaWarps(w));
          // A bigger batch never gets a shorter tile.
          ASSERT_GE(w, previous) << "seqs " << seqs << " rows " << max_rows << " sms " << sms;
          previous = w;
          const int64_t ctas = GridCtas(seqs, max_rows, heads, MmaBlockM(w));
          // The chosen tile fills 2 CTAs per SM, or it is the shortest one.
          ASSERT_TRUE(w == 1 || ctas >= int64_t{kMinCtasPerSm} * sms);
          // The next taller tile was passed over: its grid has under 2 CTAs per SM, or no
          // more CTAs than the chosen one.
          if (w < 4) {
            const int64_t taller = GridCtas(seqs, max_rows, heads, MmaBlockM(2 * w));
            ASSERT_TRUE(taller < int64_t{kMinCtasPerSm} * sms || taller == ctas);
          }
          if (w > 1) {
            // A shorter tile would have had more CTAs (otherwise it would have been chosen).
            ASSERT_GT(GridCtas(seqs, max_rows, heads, MmaBlockM(w / 2)), ctas);
          }
        }
      }
    }
  }
}

// The fragment layout functions are bijections onto their tiles.
TEST(MmaFragments, LayoutsAreBijections) {
  std::vector<int> acc(16 * 8, 0), a(16 * 16, 0), b(16 * 8, 0);
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int e = 0; e < 4; ++e) ++acc[AccRow(lane, e) * 8 + AccCol(lane, e)];
    for (int r = 0; r < 4; ++r) {
      for (int j = 0; j < 2; ++j) ++a[ARow(lane, r) * 16 + ACol(lane, r, j)];
    }
    for (int r = 0; r < 2; ++r) {
      for (int j = 0; j < 2; ++j) ++b[BK(lane, r, j) * 8 + BN(lane)];
    }
  }
  for (int x : acc) EXPECT_EQ(x, 1);
  for (int x : a) EXPECT_EQ(x, 1);
  for (int x : b) EXPECT_EQ(x, 1);
}

// mma.m16n8k16 emulated from per-lane registers: A and B gathered through the fragment
// layouts, D scattered through the accumulator layout.
void EmulateMma(const float a[kLanes][4][2], const float b[kLanes][2][2], float c[kLanes][4]) {
  float am[16][16], bm[16][8];
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int r = 0; r < 4; ++r) {
      for (int j = 0; j < 2; ++j) am[ARow(lane, r)][ACol(lane, r, j)] = a[lane][r][j];
    }
    for (int r = 0; r < 2; ++r) {
      for (int j = 0; j < 2; ++j) bm[BK(lane, r, j)][BN(lane)] = b[lane][r][j];
    }
  }
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int e = 0; e < 4; ++e) {
      float sum = 0;
      for (int k = 0; k < 16; ++k) sum += am[AccRow(lane, e)][k] * bm[k][AccCol(lane, e)];
      c[lane][e] += sum;
    }
  }
}

// ldmatrix.m8n8.x4.trans emulated: lane 8 * m + i gives the address of row i of matrix m;
// with .trans, lane l receives (row 2 * (l % 4) + j, column l / 4) of matrix m in register m.
// `tile` is a row-major [rows, cols] array; addresses are (row, col) pairs.
void EmulateLdsmX4Trans(const std::vector<float>& tile, int cols, const int addr_row[kLanes],
                        const int addr_col[kLanes], float out[kLanes][4][2]) {
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int m = 0; m < 4; ++m) {
      for (int j = 0; j < 2; ++j) {
        const int src = 8 * m + 2 * (lane % 4) + j;  // the lane that addressed that row
        out[lane][m][j] = tile[addr_row[src] * cols + addr_col[src] + lane / 4];
      }
    }
  }
}

// One warp's S = Q·Kᵀ (16 x 64 of a 64-key tile) and O = P·V exactly as the kernel loads and
// reuses its fragments, against direct products.
TEST(MmaFragments, WarpTileProductsComposeCorrectly) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> small(-4, 4);  // exact in float
  for (int d : {32, 64, 128}) {
    constexpr int kKeys = 64;
    std::vector<float> q(16 * d), k(kKeys * d), v(kKeys * d);
    for (auto* m : {&q, &k, &v}) {
      for (auto& x : *m) x = static_cast<float>(small(rng));
    }
    // S accumulators [key block][lane][e].
    std::vector<float> s(static_cast<size_t>(kKeys / 8) * kLanes * 4, 0.f);
    for (int nb = 0; nb < kKeys / 8; ++nb) {
      float c[kLanes][4] = {};
      for (int kc = 0; kc < d / 16; ++kc) {
        float a[kLanes][4][2], b[kLanes][2][2];
        for (int lane = 0; lane < kLanes; ++lane) {
          for (int r = 0; r < 4; ++r) {
            const TileChunk e = QFragElem(lane, kc, r);
            for (int j = 0; j < 2; ++j) a[lane][r][j] = q[e.row * d + e.col + j];
          }
          for (int r = 0; r < 2; ++r) {
            const TileChunk e = KFragElem(lane, nb, kc, r);
            for (int j = 0; j < 2; ++j) b[lane][r][j] = k[e.row * d + e.col + j];
          }
        }
        EmulateMma(a, b, c);
      }
      for (int lane = 0; lane < kLanes; ++lane) {
        for (int e = 0; e < 4; ++e) {
          const int row = AccRow(lane, e), key = 8 * nb + AccCol(lane, e);
          float want = 0;
          for (int x = 0; x < d; ++x) want += q[row * d + x] * k[key * d + x];
          ASSERT_EQ(c[lane][e], want) << "S row " << row << " key " << key << " d " << d;
          s[(nb * kLanes + lane) * 4 + e] = c[lane][e];
        }
      }
    }
    // O = P·V with P taken from the S accumulators and V through ldmatrix.trans.
    for (int ob = 0; ob < d / 8; ++ob) {
      float c[kLanes][4] = {};
      const int dp = ob / 2;
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        float a[kLanes][4][2], b4[kLanes][4][2], b[kLanes][2][2];
        int addr_row[kLanes], addr_col[kLanes];
        for (int lane = 0; lane < kLanes; ++lane) {
          for (int r = 0; r < 4; ++r) {
            const int nb = 2 * kk + PFromAccBlock(r);
            for (int j = 0; j < 2; ++j) {
              a[lane][r][j] = s[(nb * kLanes + lane) * 4 + PFromAccElem(r) + j];
            }
          }
          addr_row[lane] = 16 * kk + LdsmTransKey(lane);
          addr_col[lane] = 16 * dp + LdsmTransCol(lane);
        }
        EmulateLdsmX4Trans(v, d, addr_row, addr_col, b4);
        for (int lane = 0; lane < kLanes; ++lane) {
          for (int r = 0; r < 2; ++r) {
            for (int j = 0; j < 2; ++j) b[lane][r][j] = b4[lane][2 * (ob % 2) + r][j];
          }
        }
        EmulateMma(a, b, c);
      }
      for (int lane = 0; lane < kLanes; ++lane) {
        for (int e = 0; e < 4; ++e) {
          const int row = AccRow(lane, e), col = 8 * ob + AccCol(lane, e);
          float want = 0;
          for (int key = 0; key < kKeys; ++key) {
            float sv = 0;
            for (int x = 0; x < d; ++x) sv += q[row * d + x] * k[key * d + x];
            want += sv * v[key * d + col];
          }
          ASSERT_EQ(c[lane][e], want) << "O row " << row << " col " << col << " d " << d;
        }
      }
    }
  }
}

}  // namespace
}  // namespace bert::cuda::attention_plan
