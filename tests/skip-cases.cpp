// Test cases for test-skip, which runs this executable with doctest filters
// and checks how the runner (test-main.cpp) reports each mix of passing,
// skipped and failing cases. Not a test itself: every case here is meant to
// skip or fail when asked to.
#include "test-util.h"

#include <doctest/doctest.h>

#include <stdexcept>

namespace test = gloas::test;

TEST_CASE("pass") { CHECK(1 + 1 == 2); }
TEST_CASE("skip: require_model") {
    test::require_model("no-such-model.gguf");
    CHECK(false);  // not reached
}
TEST_CASE("skip: require_model inside a check") { CHECK(!test::require_model("no-such-check.gguf").empty()); }
TEST_CASE("skip: one subcase lacks a file, the other runs") {
    SUBCASE("lacks") { test::require_data("no-such-data.txt"); }
    SUBCASE("runs") { CHECK(2 + 2 == 4); }
}
TEST_CASE("skip: note_missing lets the case go on") {
    test::note_missing("models/no-such-note.bin", "how to get it");
    CHECK(3 + 3 == 6);
}
TEST_CASE("skip: for another reason") { test::skip_case("no such device (a skip for another reason)"); }
TEST_CASE("fail: a check") { CHECK(1 + 1 == 3); }
TEST_CASE("fail: an exception") { throw std::runtime_error("boom"); }
TEST_CASE("fail: a check and then a missing file") {
    CHECK(1 + 1 == 3);
    test::require_model("no-such-after-failure.gguf");
}
