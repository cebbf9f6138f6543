// C++ built with -O2 (no frame pointers): `new` inside a class method. Walking frame pointers
// from malloc loses the method, because libstdc++'s operator new keeps no frame pointer; the
// unwind tables find it.
// Usage: leak_cxx SESSIONS
// Leaks SESSIONS objects of sizeof(Session) bytes, prints "object N" and "leaked N", then
// sleeps.
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

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s SESSIONS\n", argv[0]);
        return 2;
    }
    int sessions = std::atoi(argv[1]);
    static SessionCache cache;
    report("pid", getpid());
    wait_for_go();
    size_t n = serve_clients(cache, sessions);
    report("object", static_cast<long>(sizeof(Session)));
    report("leaked", static_cast<long>(n * sizeof(Session)));
    for (;;) sleep_ms(1000);
}
