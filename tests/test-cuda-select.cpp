// Choosing the CUDA backend, on every machine: with a usable device, -ngl
// puts the context on it; without one (no driver, no GPU, a build without
// CUDA) the reason comes back as one message and nothing crashes:
// make_cuda_backend throws it, a context asked for GPU layers runs on the
// CPU saying so on stderr, one that requires them is not made, and the
// tools exit 1 for an explicit -ngl N and run on the CPU for -ngl auto.
#include "decoder/llama.h"
#include "decoder/model.h"
#include "tensor/cuda/cuda-backend.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <string>

using namespace gloas;

namespace {

std::string greedy(const model & m, int32_t ngl, bool required, std::string * backend) {
    context_params cp;
    cp.kv.kv_type = type::F32;
    cp.n_gpu_layers = ngl;
    cp.gpu_required = required;
    context ctx(m, cp);
    if (backend) *backend = ctx.backend_name();
    return test::generate_like_llama2c(ctx, "Once upon a time", 40);
}

} // namespace

TEST_CASE("cuda-select: the reason a device is not usable is one message, never a crash") {
    std::string why;
    const bool usable = cuda_usable(&why);
    MESSAGE("CUDA built: " << cuda_built() << ", usable: " << usable << (usable ? "" : " (" + why + ")"));
    if (usable) {
        CHECK(cuda_built());
        CHECK(!cuda_device_name().empty());
        return;
    }
    CHECK(!why.empty());
    CHECK(cuda_device_name().empty());
    try {
        make_cuda_backend(8);
        FAIL("make_cuda_backend made a backend without a usable device");
    } catch (const error & e) {
        CHECK(std::string(e.what()) == why);
    }
    CHECK_THROWS_AS(cuda_read_bandwidth(1 << 20, 1), error);
}

TEST_CASE("cuda-select: GPU layers without a device run on the CPU, or fail when required") {
    std::string why;
    if (cuda_usable(&why)) {
        auto m = model::load({test::require_model("stories260K.bin"), ""});
        std::string be;
        greedy(*m, -1, true, &be);
        CHECK(be == "cuda");
        return;
    }
    auto m = model::load({test::require_model("stories260K.bin"), ""});
    std::string be;
    const std::string cpu = greedy(*m, 0, false, &be);
    CHECK(be == "cpu");
    CHECK(greedy(*m, -1, false, &be) == cpu);  // falls back, same tokens
    CHECK(be == "cpu");
    try {
        greedy(*m, 99, true, nullptr);
        FAIL("a context that requires the GPU was made without one");
    } catch (const error & e) {
        const std::string msg = e.what();
        CHECK(msg.find("-ngl 99") != std::string::npos);
        CHECK(msg.find(why) != std::string::npos);
    }
}

TEST_CASE("cuda-select: gloas -ngl without a device: exit 1 for a number, the CPU for auto") {
    if (cuda_usable(nullptr)) return;  // the device runs; test-cuda checks its output
    const std::string model = test::require_model("stories260K.bin");
    const std::vector<std::string> base = {"-m", model, "--temp", "0", "-p", "Once upon a time", "-n", "20"};
    const auto cpu = test::run_tool("gloas", base);
    REQUIRE(cpu.status == 0);
    const auto n = test::run_tool("gloas", test::with_args(base, {"-ngl", "99"}));
    CHECK(n.status == 1);
    CHECK(n.err.find("-ngl 99") != std::string::npos);
    CHECK(n.out.empty());
    const auto a = test::run_tool("gloas", test::with_args(base, {"-ngl", "auto"}));
    CHECK(a.status == 0);
    CHECK(a.out == cpu.out);
    CHECK(a.err.find("running on the CPU") != std::string::npos);
    const auto b = test::run_tool("gloas-bench", {"-m", model, "-p", "8", "-n", "2", "-r", "1", "-ngl", "1"});
    CHECK(b.status == 1);
    CHECK(b.err.find("-ngl 1") != std::string::npos);
}
