// The sampling arithmetic the BPF program runs (bpf/sampling.h), checked against the
// floating-point formula and, over many draws, for unbiased estimates.
#include <linux/types.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "leakwatch.h"
#include "sampling.h"

namespace {

std::vector<uint64_t> table() {
    std::vector<uint64_t> t(LW_EXP_TABLE);
    lw_fill_exp_table(reinterpret_cast<volatile __u64*>(t.data()));
    return t;
}

double probability(uint64_t size, uint64_t mean, const std::vector<uint64_t>& t) {
    return static_cast<double>(lw_sample_probability(
               size, mean, reinterpret_cast<const volatile __u64*>(t.data()))) /
           4294967296.0;
}

}  // namespace

TEST_CASE("sampling probability is 1 - exp(-size / mean) in fixed point", "[sampling]") {
    auto t = table();
    for (uint64_t mean : {uint64_t{4096}, uint64_t{512} << 10, uint64_t{64} << 20}) {
        for (double e = 0; e <= 30; e += 0.25) {
            auto size = static_cast<uint64_t>(std::pow(2.0, e));
            double want = -std::expm1(-static_cast<double>(size) / static_cast<double>(mean));
            double got = probability(size, mean, t);
            INFO("size " << size << " mean " << mean << ": " << got << " vs " << want);
            // linear interpolation between table steps of 1/64 errs by at most (1/64)^2 / 8
            CHECK(std::abs(got - want) < 3.1e-5);
            if (want > 1e-6) CHECK(std::abs(got - want) / want < 1e-3);
            CHECK(got <= 1.0);
        }
    }
    // Beyond LW_EXP_MAX_X means every allocation is taken, at its own size.
    CHECK(probability(uint64_t{24} << 20, uint64_t{1} << 20, t) == 1.0);
    CHECK(lw_sample_bytes(12345, uint64_t{1} << 32) == 12345);
    CHECK(lw_sample_weight(uint64_t{1} << 32) == 1);
    // A 64-byte allocation under a 512 KiB mean stands for about 8,192.5 of them.
    uint64_t p =
        lw_sample_probability(64, 512 << 10, reinterpret_cast<const volatile __u64*>(t.data()));
    CHECK(lw_sample_weight(p) == 8193);
    CHECK(std::abs(static_cast<double>(lw_sample_bytes(64, p)) - 64 * 8192.5) < 64);
}

TEST_CASE("sampled estimates are unbiased over many draws", "[sampling]") {
    // Mixed sizes, 16 B to 1 MiB log-uniform, 200 independent samplings of the same 20,000
    // allocations: the mean of the estimates is within 0.5% of the truth (its standard error
    // is about 0.1% here), and single estimates spread as the formula says.
    auto t = table();
    const uint64_t mean = 64 << 10;
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> u(std::log(16.0), std::log(1048576.0));
    std::vector<uint64_t> sizes(20000);
    double truth = 0, variance = 0;
    for (auto& s : sizes) {
        s = static_cast<uint64_t>(std::exp(u(rng)));
        truth += static_cast<double>(s);
        double q = -std::expm1(-static_cast<double>(s) / mean);
        variance += static_cast<double>(s) * static_cast<double>(s) * (1 - q) / q;
    }
    const double sd = std::sqrt(variance);
    std::uniform_int_distribution<uint32_t> draw;
    double sum = 0;
    int outside = 0;
    const int runs = 200;
    for (int r = 0; r < runs; ++r) {
        double estimate = 0;
        for (uint64_t s : sizes) {
            uint64_t p =
                lw_sample_probability(s, mean, reinterpret_cast<const volatile __u64*>(t.data()));
            if (p >= (uint64_t{1} << 32) || draw(rng) < p)
                estimate += static_cast<double>(lw_sample_bytes(s, p));
        }
        sum += estimate;
        if (std::abs(estimate - truth) > 3 * sd) ++outside;
    }
    double average = sum / runs;
    INFO("truth " << truth << ", average estimate " << average << ", sd " << sd);
    CHECK(std::abs(average - truth) / truth < 0.005);
    CHECK(outside <= 3);  // beyond 3 standard deviations: 0.3% expected, 200 runs
}
