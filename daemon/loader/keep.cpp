#include "loader/keep.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "leakwatch.h"
#include "util/hash.h"

namespace leakwatch {

namespace {

constexpr const char* kSubdirs[] = {"maps", "links"};

std::string hex(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

bool is_bpffs(const std::string& path) {
    struct statfs fs {};
    return statfs(path.c_str(), &fs) == 0 && fs.f_type == BPF_FS_MAGIC;
}

// Pinned objects of a set's directory, opened: "maps/live" -> fd.
std::map<std::string, int> open_pins(const std::string& dir) {
    std::map<std::string, int> out;
    for (const char* sub : kSubdirs) {
        std::string path = dir + "/" + sub;
        DIR* d = opendir(path.c_str());
        if (!d) continue;
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] == '.') continue;
            int fd = bpf_obj_get((path + "/" + e->d_name).c_str());
            if (fd < 0) {
                spdlog::warn("cannot open the pinned {}/{}: {}", path, e->d_name, strerror(errno));
                continue;
            }
            out[std::string(sub) + "/" + e->d_name] = fd;
        }
        closedir(d);
    }
    return out;
}

// Removes a set's directory and what is pinned in it (a pin holds its object until unlinked).
void remove_pins(const std::string& dir) {
    for (const char* sub : kSubdirs) {
        std::string path = dir + "/" + sub;
        if (DIR* d = opendir(path.c_str())) {
            while (dirent* e = readdir(d))
                if (e->d_name[0] != '.') unlink((path + "/" + e->d_name).c_str());
            closedir(d);
        }
        rmdir(path.c_str());
    }
    rmdir(dir.c_str());
}

void close_all(std::map<std::string, int>& fds) {
    for (auto& [name, fd] : fds) close(fd);
    fds.clear();
}

// One type of the object's BTF as text: what a map's key or value looks like in memory.
void describe_type(const btf* b, uint32_t id, std::string& out, int depth = 0) {
    const btf_type* t = btf__type_by_id(b, id);
    if (!t || depth > 16) {
        out += '?';
        return;
    }
    switch (btf_kind(t)) {
        case BTF_KIND_TYPEDEF:
        case BTF_KIND_VOLATILE:
        case BTF_KIND_CONST:
        case BTF_KIND_RESTRICT:
        case BTF_KIND_TYPE_TAG:
            describe_type(b, t->type, out, depth + 1);
            return;
        case BTF_KIND_INT:
            out += "i" + std::to_string(t->size) + "." + std::to_string(btf_int_encoding(t));
            return;
        case BTF_KIND_ENUM:
        case BTF_KIND_ENUM64:
            out += "e" + std::to_string(t->size);
            return;
        case BTF_KIND_PTR:
            out += "p";
            return;
        case BTF_KIND_ARRAY: {
            const struct btf_array* a = btf_array(t);
            out += "a" + std::to_string(a->nelems) + "[";
            describe_type(b, a->type, out, depth + 1);
            out += "]";
            return;
        }
        case BTF_KIND_STRUCT:
        case BTF_KIND_UNION: {
            out += (btf_kind(t) == BTF_KIND_STRUCT ? "s" : "u") + std::to_string(t->size) + "{";
            const struct btf_member* m = btf_members(t);
            for (uint16_t i = 0; i < btf_vlen(t); i++, m++) {
                const char* name = btf__name_by_offset(b, m->name_off);
                out += std::string(name ? name : "") + "@" +
                       std::to_string(btf_member_bit_offset(t, i)) + ":";
                describe_type(b, m->type, out, depth + 1);
                out += ";";
            }
            out += "}";
            return;
        }
        default:
            out += "k" + std::to_string(btf_kind(t)) + "/" + std::to_string(t->size);
    }
}

}  // namespace

// ---- KeptSet ------------------------------------------------------------------------------

KeptSet::KeptSet(std::string name, std::string dir, std::map<std::string, int> found)
    : name_(std::move(name)), dir_(std::move(dir)), found_(std::move(found)) {
    if (dir_.empty()) return;
    mkdir(dir_.c_str(), 0700);
    for (const char* sub : kSubdirs) mkdir((dir_ + "/" + sub).c_str(), 0700);
}

KeptSet::~KeptSet() {
    close_all(found_);
}

int KeptSet::take(const std::string& rel) {
    std::lock_guard lock(mu_);
    auto it = found_.find(rel);
    if (it == found_.end()) return -1;
    int fd = it->second;
    found_.erase(it);
    return fd;
}

std::vector<std::pair<std::string, int>> KeptSet::take_all(std::string_view prefix) {
    std::lock_guard lock(mu_);
    std::vector<std::pair<std::string, int>> out;
    for (auto it = found_.lower_bound(std::string(prefix));
         it != found_.end() && it->first.starts_with(prefix);)
        out.emplace_back(it->first, it->second), it = found_.erase(it);
    return out;
}

Result<void> KeptSet::keep(const std::string& rel, int fd) {
    if (!dir_.empty()) {
        const std::string path = dir_ + "/" + rel;
        unlink(path.c_str());
        if (bpf_obj_pin(fd, path.c_str())) return fail_errno("pinning " + path, errno);
    }
    std::lock_guard lock(mu_);
    kept_[rel] = fd;
    return {};
}

void KeptSet::forget(const std::string& rel) {
    if (!dir_.empty()) unlink((dir_ + "/" + rel).c_str());
    std::lock_guard lock(mu_);
    kept_.erase(rel);
}

size_t KeptSet::kept() const {
    std::lock_guard lock(mu_);
    return kept_.size();
}

// ---- Keeper -------------------------------------------------------------------------------

Keeper::Keeper(KeepOptions options) : options_(std::move(options)) {
    // What the service manager kept of the previous run (LISTEN_FDS and their names).
    char** names = nullptr;
    int n = sd_listen_fds_with_names(1, &names);
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        std::string name = names && names[i] ? names[i] : "";
        if (name.find('/') == std::string::npos) {
            spdlog::debug("closing descriptor {} from the service manager ('{}')", fd, name);
            close(fd);
        } else if (!stored_.emplace(name, fd).second) {
            close(fd);
        }
        if (!name.empty()) received_.push_back(name);
    }
    if (names) {
        for (int i = 0; i < n; i++) free(names[i]);
        free(names);
    }
    if (!stored_.empty())
        spdlog::info("{} BPF maps and links handed back by the service manager", stored_.size());

    if (options_.pin_dir.empty()) return;
    const std::string& dir = options_.pin_dir;
    std::string parent = dir.substr(0, dir.find_last_of('/'));
    if (!is_bpffs(dir) && !is_bpffs(parent.empty() ? "/" : parent)) {
        spdlog::info(
            "{} is not on a bpffs: nothing is pinned, and a crash loses the BPF maps (mount one "
            "there, or pass --bpf-pin-dir)",
            dir);
        return;
    }
    if (mkdir(dir.c_str(), 0700) && errno != EEXIST) {
        spdlog::warn("cannot create {}: {}; nothing is pinned, and a crash loses the BPF maps", dir,
                     strerror(errno));
        return;
    }
    // One leakwatchd a directory: another one's maps are not this one's to reuse or drop. The
    // lock goes with the process, so a leakwatchd that crashed holds none.
    lock_fd_ = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lock_fd_ < 0 || flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
        spdlog::warn(
            "{}: {}; this leakwatchd pins nothing, and a crash loses its BPF maps", dir,
            errno == EWOULDBLOCK ? "another leakwatchd keeps its state there" : strerror(errno));
        return;
    }
    pin_dir_ = dir;
}

Keeper::~Keeper() {
    close_all(stored_);
    if (lock_fd_ >= 0) close(lock_fd_);
}

std::shared_ptr<KeptSet> Keeper::set(const std::string& object, uint64_t layout) {
    const std::string name = object + "-" + hex(layout);
    std::map<std::string, int> found;
    // The store's descriptors first: after a restart under systemd nothing is pinned.
    for (auto it = stored_.begin(); it != stored_.end();) {
        const std::string& full = it->first;
        if (full.starts_with(name + "/")) {
            found[full.substr(name.size() + 1)] = it->second;
        } else if (full.starts_with(object + "-")) {
            spdlog::warn(
                "dropping {} kept by a leakwatchd whose {} BPF maps had another layout "
                "(this one's: {})",
                full, object, name);
            close(it->second);
        } else {
            ++it;
            continue;
        }
        it = stored_.erase(it);
    }
    std::string dir;
    if (pinning()) {
        dir = pin_dir_ + "/" + name;
        if (DIR* d = opendir(pin_dir_.c_str())) {
            while (dirent* e = readdir(d)) {
                std::string entry = e->d_name;
                if (entry.starts_with(object + "-") && entry != name) {
                    spdlog::warn(
                        "dropping the state pinned in {}/{}: its {} BPF maps have another "
                        "layout than this leakwatchd's ({})",
                        pin_dir_, entry, object, name);
                    remove_pins(pin_dir_ + "/" + entry);
                }
            }
            closedir(d);
        }
        for (auto& [rel, fd] : open_pins(dir)) {
            if (!found.emplace(rel, fd).second) close(fd);  // the store's copy is the same
        }
    }
    if (!found.empty())
        spdlog::info("{}: {} maps and links kept by the previous leakwatchd", name, found.size());
    auto set = std::make_shared<KeptSet>(name, dir, std::move(found));
    sets_.push_back(set);
    return set;
}

void Keeper::settle() {
    for (auto& [name, fd] : stored_) {
        spdlog::warn("dropping {}, kept by the previous leakwatchd: no BPF object of it is loaded",
                     name);
        close(fd);
    }
    stored_.clear();
    if (pinning()) {
        if (DIR* d = opendir(pin_dir_.c_str())) {
            while (dirent* e = readdir(d)) {
                std::string entry = e->d_name;
                if (entry[0] == '.') continue;
                bool ours = false;
                for (const auto& s : sets_) ours |= s->name() == entry;
                if (ours) continue;
                spdlog::warn("dropping the state pinned in {}/{}: no BPF object of it is loaded",
                             pin_dir_, entry);
                remove_pins(pin_dir_ + "/" + entry);
            }
            closedir(d);
        }
    }
    // The sets hold (and have pinned) what the store kept: the store lets go of its copies, so
    // that a link detached in this run is not held there.
    if (received_.empty()) return;
    for (const auto& name : received_) sd_notifyf(0, "FDSTOREREMOVE=1\nFDNAME=%s", name.c_str());
    sd_notify_barrier(0, 5 * 1000000ull);
    received_.clear();
}

bool Keeper::hand_over() {
    if (!options_.fd_store) return false;
    size_t handed = 0, failed = 0;
    for (const auto& set : sets_) {
        std::lock_guard lock(set->mu_);
        for (const auto& [rel, fd] : set->kept_) {
            std::string state = "FDSTORE=1\nFDPOLL=0\nFDNAME=" + set->name_ + "/" + rel;
            if (sd_pid_notify_with_fds(0, 0, state.c_str(), &fd, 1) > 0)
                handed++;
            else
                failed++;
        }
    }
    // The store has them once the manager has read every message up to here.
    int barrier = sd_notify_barrier(0, 10 * 1000000ull);
    spdlog::info("handed {} BPF maps and links to the service manager{}{}", handed,
                 failed ? fmt::format(" ({} could not be sent)", failed) : "",
                 barrier < 0 ? fmt::format(" (no reply: {})", strerror(-barrier)) : "");
    clear();
    return true;
}

void Keeper::clear() {
    for (const auto& set : sets_)
        if (!set->dir_.empty()) remove_pins(set->dir_);
}

// ---- the kept maps of a BPF object --------------------------------------------------------

bool kept_map(const char* name, bool internal, const std::set<std::string>& scratch) {
    return !internal && !scratch.count(name);
}

uint64_t state_layout(bpf_object* obj, const std::set<std::string>& scratch) {
    std::string text = "v" + std::to_string(LW_STATE_VERSION);
    const btf* b = bpf_object__btf(obj);
    bpf_map* map;
    bpf_object__for_each_map(map, obj) {
        if (!bpf_map__autocreate(map) ||  // not made on this kernel
            !kept_map(bpf_map__name(map), bpf_map__is_internal(map), scratch))
            continue;
        text += fmt::format("|{}:{}:{}:{}:{}:{}:", bpf_map__name(map),
                            static_cast<int>(bpf_map__type(map)), bpf_map__key_size(map),
                            bpf_map__value_size(map), bpf_map__max_entries(map),
                            bpf_map__map_flags(map));
        if (b && bpf_map__btf_key_type_id(map))
            describe_type(b, bpf_map__btf_key_type_id(map), text);
        text += "=";
        if (b && bpf_map__btf_value_type_id(map))
            describe_type(b, bpf_map__btf_value_type_id(map), text);
    }
    return stable_hash(text);
}

Result<void> reuse_kept_maps(KeptSet& set, bpf_object* obj, const std::set<std::string>& scratch) {
    bpf_map* map;
    size_t reused = 0;
    bpf_object__for_each_map(map, obj) {
        if (!bpf_map__autocreate(map) ||  // not made on this kernel
            !kept_map(bpf_map__name(map), bpf_map__is_internal(map), scratch))
            continue;
        int fd = set.take(std::string("maps/") + bpf_map__name(map));
        if (fd < 0) continue;
        int err = bpf_map__reuse_fd(map, fd);
        close(fd);
        if (err)
            return fail_errno(std::string("reusing the kept BPF map ") + bpf_map__name(map), err);
        reused++;
    }
    if (reused) spdlog::info("{}: reusing {} kept BPF maps", set.name(), reused);
    return {};
}

Result<void> keep_maps(KeptSet& set, bpf_object* obj, const std::set<std::string>& scratch) {
    bpf_map* map;
    bpf_object__for_each_map(map, obj) {
        if (!bpf_map__autocreate(map) ||  // not made on this kernel
            !kept_map(bpf_map__name(map), bpf_map__is_internal(map), scratch))
            continue;
        if (auto ok = set.keep(std::string("maps/") + bpf_map__name(map), bpf_map__fd(map)); !ok)
            return ok;
    }
    return {};
}

void keep_links(KeptSet* set, const std::vector<std::pair<std::string, int>>& links) {
    if (!set) return;
    auto old = set->take_all("links/ev_");
    std::set<std::string> now;
    for (const auto& [name, fd] : links) {
        now.insert("links/ev_" + name);
        if (auto ok = set->keep("links/ev_" + name, fd); !ok)
            spdlog::warn("{}: {}; a crash detaches it", set->name(), ok.error().message);
    }
    for (auto& [rel, fd] : old) {
        if (!now.count(rel)) set->forget(rel);  // its pin too: nothing attaches it any more
        close(fd);
    }
}

}  // namespace leakwatch
