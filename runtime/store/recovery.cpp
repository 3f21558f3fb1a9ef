// Recovery reads the checkpoint and the log end first, then replays in chunks of short read
// transactions (store::replay), logging what it did so operators see how long a restart took.
#include "runtime/store/recovery.hpp"

#include "runtime/log.hpp"

#include <chrono>

namespace agner::store {

replay_stats recover(const node_store& s, replayable& state) {
  auto t0 = std::chrono::steady_clock::now();
  replay_stats st;
  std::string domain = state.domain();
  st.from = s.checkpoint(domain);
  st.through = st.from;
  st.records = s.replay(st.from, [&](const log_entry& e) {
    state.apply(e);
    st.through = e.position;
  });
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info("store", "recovered {}: replayed {} records after checkpoint {} in {:.3f} s", domain, st.records, st.from,
            st.seconds);
  return st;
}

} // namespace agner::store
