// The doctest runner of every test executable, with skips (tests/test-util.h:
// require_model for a missing file, skip_case): a skipped case is reported as
// such, neither passed nor failed, and the executable exits with
//     1   when a case failed,
//     77  when none failed and one was skipped (ctest's SKIP_RETURN_CODE),
//     0   when every case ran and passed.
// The "gloas" reporter is doctest's console reporter without the noise a
// skip would make there (the exception, "FAILURE!"); the counting is done by a
// listener, so that it holds under any reporter (-r=xml, ...).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "test-util.h"

#include <cstring>

namespace {

using gloas::test::case_state;
using gloas::test::current_case;
using gloas::test::k_skip_marker;

// A SKIPPED line, as thrown or as an assertion quotes the exception it threw.
bool is_skip_line(const doctest::String & s) {
    const char * p = s.c_str();
    if (*p == '"') ++p;
    return std::strncmp(p, k_skip_marker, std::strlen(k_skip_marker)) == 0;
}

// doctest reports an exception leaving a subcase twice: first with this text
// while it is in flight, then translated once the case has exited.
bool is_subcase_placeholder(const doctest::String & s) {
    return std::strncmp(s.c_str(), "exception thrown in subcase", 27) == 0;
}

// Whether an exception report is a skip of the current case.
bool is_skip(const doctest::TestCaseException & e) {
    return !e.is_crash && (is_skip_line(e.error_string) ||
                           (current_case().skip_thrown && is_subcase_placeholder(e.error_string)));
}

struct totals {
    int failed = 0;
    int skipped = 0;
    int skipped_in_doctest_failed = 0;  // skipped cases doctest counts as failed
    int skip_asserts = 0;               // checks that failed only by a skip
};
totals g_totals;

// Decided at the end of each case: skipped when it asked to be and nothing
// else went wrong.
bool case_skipped(const doctest::CurrentTestCaseStats & st) {
    const case_state & c = current_case();
    const int other_failures = doctest::TestCaseFailureReason::Crash | doctest::TestCaseFailureReason::Timeout |
                               doctest::TestCaseFailureReason::TooManyFailedAsserts |
                               doctest::TestCaseFailureReason::ShouldHaveFailedButDidnt |
                               doctest::TestCaseFailureReason::DidntFailExactlyNumTimes;
    return !c.skips.empty() && !c.other_exception && c.real_failed_asserts == 0 && !(st.failure_flags & other_failures);
}

struct skip_listener : doctest::IReporter {
    explicit skip_listener(const doctest::ContextOptions &) {}
    void report_query(const doctest::QueryData &) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats &) override {}
    void test_case_start(const doctest::TestCaseData & tc) override {
        current_case() = case_state{};
        current_case().name = tc.m_name;
    }
    void test_case_reenter(const doctest::TestCaseData &) override { current_case().skip_thrown = false; }
    void test_case_end(const doctest::CurrentTestCaseStats & st) override {
        if (case_skipped(st)) {
            ++g_totals.skipped;
            if (!st.testCaseSuccess) ++g_totals.skipped_in_doctest_failed;
        } else if (!st.testCaseSuccess) {
            ++g_totals.failed;
        }
    }
    void test_case_exception(const doctest::TestCaseException & e) override {
        if (!is_skip(e)) current_case().other_exception = true;
    }
    void subcase_start(const doctest::SubcaseSignature &) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData & ad) override {
        if (!ad.m_failed) return;
        if (ad.m_threw && is_skip_line(ad.m_exception)) ++g_totals.skip_asserts;
        else ++current_case().real_failed_asserts;
    }
    void log_message(const doctest::MessageData &) override {}
    void test_case_skipped(const doctest::TestCaseData &) override {}
};

struct gloas_reporter : doctest::ConsoleReporter {
    using ConsoleReporter::ConsoleReporter;
    void test_case_end(const doctest::CurrentTestCaseStats & st) override {
        if (!case_skipped(st)) ConsoleReporter::test_case_end(st);
    }
    void test_case_exception(const doctest::TestCaseException & e) override {
        if (!is_skip(e)) ConsoleReporter::test_case_exception(e);
    }
    void log_assert(const doctest::AssertData & ad) override {
        if (!(ad.m_threw && is_skip_line(ad.m_exception))) ConsoleReporter::log_assert(ad);
    }
    void test_run_end(const doctest::TestRunStats & p) override {
        // Skipped cases count as skipped, neither passed nor failed.
        doctest::TestRunStats q = p;
        q.numTestCasesFailed -= unsigned(g_totals.skipped_in_doctest_failed);
        q.numTestCasesPassingFilters -= unsigned(g_totals.skipped);
        q.numAssertsFailed -= g_totals.skip_asserts;
        ConsoleReporter::test_run_end(q);
        if (g_totals.skipped)
            s << "[doctest] " << g_totals.skipped << " test case(s) skipped (the " << k_skip_marker
              << "lines above)\n";
    }
};

} // namespace

DOCTEST_REGISTER_LISTENER("gloas-skips", 1, skip_listener);
DOCTEST_REGISTER_REPORTER("gloas", 1, gloas_reporter);

REGISTER_EXCEPTION_TRANSLATOR(const gloas::test::skipped_case & e) {
    return doctest::String(e.message.c_str());
}

int main(int argc, char ** argv) {
    doctest::Context ctx;
    ctx.setOption("reporters", "gloas");
    ctx.applyCommandLine(argc, argv);
    const int rc = ctx.run();
    if (ctx.shouldExit()) return rc;
    if (g_totals.failed || (rc && !g_totals.skipped)) return rc ? rc : 1;
    return g_totals.skipped ? 77 : 0;
}
