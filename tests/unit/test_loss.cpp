// The loss reasons (aggregate/loss.h): the table docs/metrics.md shows is the table the metrics
// and the log use, reason for reason.
#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "aggregate/loss.h"

using namespace leakwatch;

namespace {

// The rows of the "Lost events" table of docs/metrics.md.
std::vector<std::string> documented_rows() {
    std::ifstream in(std::string(LEAKWATCH_DOCS) + "/metrics.md");
    REQUIRE(in);
    std::vector<std::string> rows;
    std::string line;
    bool in_section = false;
    while (std::getline(in, line)) {
        if (line.starts_with("#")) in_section = line == "### Lost events";
        if (in_section && line.starts_with("| `")) rows.push_back(line);
    }
    return rows;
}

}  // namespace

TEST_CASE("docs/metrics.md documents every loss reason as the table says, and no other",
          "[aggregate][loss]") {
    auto rows = documented_rows();
    REQUIRE_FALSE(rows.empty());
    std::set<std::string> rows_left(rows.begin(), rows.end());
    for (const LossReason& reason : kLossReasons) {
        INFO(reason.name);
        std::string row =
            "| `" + std::string(reason.name) + "` | " + std::string(reason.doc) + " |";
        CHECK(rows_left.erase(row) == 1);
    }
    // Whatever is left is a reason the code does not have, or a row that differs from the table.
    for (const auto& row : rows_left) UNSCOPED_INFO("not in kLossReasons: " << row);
    CHECK(rows_left.empty());
}

TEST_CASE("every loss reason has a distinct label and advice", "[aggregate][loss]") {
    std::set<std::string_view> names;
    static const std::regex label("[a-z_]+");
    for (const LossReason& reason : kLossReasons) {
        INFO(reason.name);
        CHECK(names.insert(reason.name).second);
        CHECK(std::regex_match(std::string(reason.name), label));
        CHECK_FALSE(reason.advice.empty());
        CHECK(reason.doc.find(" | ") != std::string_view::npos);  // what happened | what to do
    }
    CHECK(names.size() == LW_LOST_MAX);
}

TEST_CASE("add_lost adds reason by reason", "[aggregate][loss]") {
    LostCounters a{}, b{};
    a[LW_LOST_LIVE_FULL] = 2;
    b[LW_LOST_LIVE_FULL] = 3;
    b[LW_LOST_K_LIVE_FULL] = 7;
    add_lost(a, b);
    CHECK(a[LW_LOST_LIVE_FULL] == 5);
    CHECK(a[LW_LOST_K_LIVE_FULL] == 7);
    CHECK(a[LW_LOST_EVENTS_FULL] == 0);
}
