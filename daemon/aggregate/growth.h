// What the leak detector says of one series (a process or a stack), carried by snapshots.
#pragma once

namespace leakwatch {

struct Growth {
    bool followed = false;     // the detector keeps a history of this series
    double rate = 0;           // bytes/s over the detection window (0 until it is covered)
    bool suspected = false;    // a leak, with hysteresis
    double flagged_since = 0;  // unix seconds, when suspected
};

}  // namespace leakwatch
