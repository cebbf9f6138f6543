// C++ built with -O2 (no frame pointers): `new` inside a class method. Walking frame pointers
// from malloc loses the method, because libstdc++'s operator new keeps no frame pointer; the
// unwind tables find it.
// Usage: leak_cxx SESSIONS [WARMUP]
// With WARMUP, first serves WARMUP sessions and forgets them (the path is warm, as a running
// service's is: its stack's unwind rules are known before the leak starts). Then leaks
// SESSIONS objects of sizeof(Session) bytes, prints "object N" and "leaked N", then sleeps.
// Built twice: -O2 without frame pointers (leak_cxx) and -O1 with them (leak_cxx_fp).
#include <cstdio>
#include <cstdlib>

#include "fixture.h"

struct Session {
    char buffer[200];
    int id;
};

class SessionCache {
  public:
    // The leak: sessions are remembered and never forgotten.
    __attribute__((noinline)) void remember(int id) {
        auto* s = new Session();
        s->id = id;
        sessions_[count_++ % kSlots] = s;
    }
    size_t count() const { return count_; }
    void forget_all() {
        for (auto*& s : sessions_) {
            delete s;
            s = nullptr;
        }
        count_ = 0;
    }

  private:
    static constexpr size_t kSlots = 1 << 16;
    Session* sessions_[kSlots] = {};
    size_t count_ = 0;
};

__attribute__((noinline)) size_t serve_clients(SessionCache& cache, int clients) {
    volatile int seen = 0;
    for (int i = 0; i < clients; i++) {
        cache.remember(i);
        seen = seen + 1;
    }
    return cache.count() + static_cast<size_t>(seen) * 0;
}

// After the warm-up round: its sessions are forgotten, and the path is warm as a running
// service's is (it ran a while ago).
__attribute__((noinline)) void end_round(SessionCache& cache, int round) {
    if (round != 0) return;
    cache.forget_all();
    sleep_ms(300);
}

int main(int argc, char** argv) {
    if (argc != 2 && argc != 3) {
        std::fprintf(stderr, "usage: %s SESSIONS [WARMUP]\n", argv[0]);
        return 2;
    }
    int sessions = std::atoi(argv[1]);
    int warmup = argc == 3 ? std::atoi(argv[2]) : 0;
    static SessionCache cache;
    report("pid", getpid());
    wait_for_go();
    size_t n = 0;
    // One call site for both rounds, so that the leak's stack is the warm-up's: a loop with a
    // bound the compiler cannot see and no branch in its body, which it would otherwise unroll
    // or split into two calls.
    static volatile int rounds = 2;
    const int counts[2] = {warmup, sessions};
    for (int round = warmup > 0 ? 0 : 1; round < rounds; round++) {
        n = serve_clients(cache, counts[round]);
        end_round(cache, round);
    }
    report("object", static_cast<long>(sizeof(Session)));
    report("leaked", static_cast<long>(n * sizeof(Session)));
    for (;;) sleep_ms(1000);
}
