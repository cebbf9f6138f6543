// A bounded map that evicts its least recently used entry, with the counters the self metrics
// export. Not thread-safe: the owner locks around it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <list>
#include <unordered_map>
#include <utility>

namespace leakwatch {

template <class Key, class Value, class Hash = std::hash<Key>>
class LruCache {
  public:
    explicit LruCache(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {}

    // The value under `key`, made the most recently used, or nullptr. Counts a hit or a miss.
    Value* get(const Key& key) {
        Value* v = peek(key);
        if (v != nullptr) {
            ++hits_;
        } else {
            ++misses_;
        }
        return v;
    }
    // Like get, without counting.
    Value* peek(const Key& key) {
        auto it = index_.find(key);
        if (it == index_.end()) return nullptr;
        order_.splice(order_.begin(), order_, it->second);
        return &it->second->second;
    }
    // Inserts or replaces; evicts the least recently used entries beyond the capacity.
    Value& put(const Key& key, Value value) {
        auto it = index_.find(key);
        if (it != index_.end()) {
            it->second->second = std::move(value);
            order_.splice(order_.begin(), order_, it->second);
            return it->second->second;
        }
        order_.emplace_front(key, std::move(value));
        index_.emplace(key, order_.begin());
        trim();
        return order_.front().second;
    }
    void erase(const Key& key) {
        auto it = index_.find(key);
        if (it == index_.end()) return;
        order_.erase(it->second);
        index_.erase(it);
    }
    void set_capacity(size_t capacity) {
        capacity_ = std::max<size_t>(1, capacity);
        trim();
    }
    void clear() {
        index_.clear();
        order_.clear();
    }
    template <class F>
    void for_each(F&& f) {
        for (auto& [k, v] : order_) f(k, v);
    }

    size_t size() const { return index_.size(); }
    size_t capacity() const { return capacity_; }
    uint64_t hits() const { return hits_; }
    uint64_t misses() const { return misses_; }
    uint64_t evictions() const { return evictions_; }
    // For lookups that are decided outside get() (e.g. a second key for the same entry).
    void count_hit() { ++hits_; }
    void count_miss() { ++misses_; }

  private:
    void trim() {
        while (index_.size() > capacity_) {
            index_.erase(order_.back().first);
            order_.pop_back();
            ++evictions_;
        }
    }

    size_t capacity_;
    std::list<std::pair<Key, Value>> order_;  // most recently used first
    std::unordered_map<Key, typename std::list<std::pair<Key, Value>>::iterator, Hash> index_;
    uint64_t hits_ = 0;
    uint64_t misses_ = 0;
    uint64_t evictions_ = 0;
};

}  // namespace leakwatch
