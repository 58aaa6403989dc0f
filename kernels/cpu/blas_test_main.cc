// GoogleTest's main for tests of code that runs OpenBLAS: it first re-executes the test as
// the programs do (blas_core.h), so that the tests check the OpenBLAS kernels that
// bert_server and bert_encode run on this machine.
#include "gtest/gtest.h"
#include "kernels/cpu/blas_core.h"

int main(int argc, char** argv) {
  bert::cpu::ReexecForBetterBlasCore(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
