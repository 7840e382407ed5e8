// The test runner's skips (test-main.cpp, test-util.h):
// runs tests/skip-cases with doctest filters and checks the exit status
// ctest sees (0 all passed, 77 skipped, 1 failed) and what is printed.
#include "test-util.h"

#include <doctest/doctest.h>

#include <string>

namespace test = gloas::test;

namespace {

test::run_result run_cases(const std::string & filter) {
    return test::run_tool(GLOAS_SKIP_CASES, {"--test-case=" + filter, "--no-intro"});
}

bool has(const std::string & s, const std::string & what) { return s.find(what) != std::string::npos; }

} // namespace

TEST_CASE("skip: only passing cases exit 0") {
    auto r = run_cases("pass");
    CHECK(r.status == 0);
    CHECK(!has(r.out, "SKIPPED"));
}

TEST_CASE("skip: a case lacking a file is skipped, naming it; the others run; exit 77") {
    auto r = run_cases("pass,skip*");
    INFO(r.out);
    CHECK(r.status == 77);
    CHECK(has(r.out, "SKIPPED: needs models/no-such-model.gguf (models/fetch.sh no-such-model.gguf, or GLOAS_MODELS)"));
    CHECK(has(r.out, "SKIPPED: needs models/no-such-check.gguf"));
    CHECK(has(r.out, "SKIPPED: needs data/no-such-data.txt"));
    CHECK(has(r.out, "SKIPPED: needs models/no-such-note.bin (how to get it)"));
    CHECK(has(r.out, "SKIPPED: no such device (a skip for another reason)"));
    CHECK(has(r.out, "1 passed | 0 failed"));
    CHECK(has(r.out, "5 test case(s) skipped"));
    CHECK(has(r.out, "Status: SUCCESS!"));
    // A skip is not reported as an error or exception.
    CHECK(!has(r.out, "ERROR"));
    CHECK(!has(r.out, "THREW"));
}

TEST_CASE("skip: a failure fails the run, with skips beside it or before them") {
    for (const char * filter : {"fail: a check", "fail: an exception", "fail: a check and then*", "pass,skip*,fail: a check"}) {
        INFO(filter);
        auto r = run_cases(filter);
        INFO(r.out);
        CHECK(r.status == 1);
        CHECK(has(r.out, "Status: FAILURE!"));
    }
    auto r = run_cases("fail: a check and then*");
    CHECK(has(r.out, "SKIPPED: needs models/no-such-after-failure.gguf"));
    CHECK(has(r.out, "1 + 1 == 3"));
}
