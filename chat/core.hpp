// The chat core: the user and conversation services over one node's store, and the typed client
// functions the gateway calls. Everything here is asynchronous: replies go to a session_sink.
#pragma once

#include "chat/conversations.hpp"
#include "chat/ids.hpp"
#include "chat/protocol.hpp"
#include "chat/session_sink.hpp"
#include "chat/users.hpp"
#include "runtime/metrics.hpp"
#include "runtime/service.hpp"
#include "runtime/slot_table.hpp"
#include "runtime/store/store.hpp"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>

namespace agner::chat {

struct chat_options {
  /// Node id in message ids (0..1023): unique per node of a cluster.
  uint32_t node_id = 1;
  /// Shards per service; fixed for a data directory (user checkpoints are per shard).
  uint32_t user_shards = 8;
  uint32_t conversation_shards = 8;
  /// How often a user shard writes its dirty users to the write-back cache and checkpoints:
  /// the longest log tail replayed after a crash.
  std::chrono::milliseconds checkpoint_interval{10'000};
  /// Period of the user shards' housekeeping tick.
  std::chrono::milliseconds tick_interval{200};
  /// A checkpoint walks its shard's users a slice per tick: at least this many users per tick,
  /// and enough to finish within half the interval. One slice's dirty users go to the store as
  /// one flush, so a checkpoint never holds the shard or the writer for the whole shard at once.
  uint32_t checkpoint_slice_users = 4096;
  /// History reads that wait longer than this in a read lane are answered `unavailable`.
  std::chrono::milliseconds history_timeout{5'000};
  user_limits users;
  conversation_limits conversations;
  /// Where the shards' write lanes run (service_options::homes); empty: CAF's workers.
  std::vector<std::function<void(std::function<void()>)>> homes;
};

class chat_core {
public:
  using escalation = std::function<void(const std::string&)>;

  chat_core(caf::actor_system& sys, store::node_store& store, metrics::registry& reg, chat_options opts,
            escalation escalate);
  ~chat_core();
  chat_core(const chat_core&) = delete;
  chat_core& operator=(const chat_core&) = delete;

  // ---- typed client functions (any thread) ----

  /// A device identified: the user's owner replies `ready` on `sink`, then replays every entry
  /// after `resume_from` (or after the device's last ack), then pushes live deliveries.
  void attach(user_id u, std::string device, std::optional<uint64_t> resume_from, sink_ptr sink, std::string ref);
  void detach(user_id u, std::string device, sink_ptr sink);
  /// 1:1 send. `stored` (or an error) is pushed to `sink` with `ref`.
  void send(user_id from, user_id to, std::string nonce, std::string body, sink_ptr sink, std::string ref);
  void ack(user_id u, std::string device, uint64_t inbox_seq);
  /// A history page of a conversation `u` is a member of, answered on `sink`.
  void history(user_id u, const proto::history& req, sink_ptr sink, std::string ref);
  /// True while the owner of `u`'s data or of the conversation is past its high watermark: the
  /// gateway stops reading from that connection until it clears.
  bool overloaded(user_id u) const noexcept;

  // ---- users (blocking; operator paths) ----

  /// Registers `name`; returns the new id, or the existing one if the name is taken. Blocks until
  /// durable; throws std::runtime_error if the store refuses.
  user_id create_user(std::string_view name);
  /// Ensures users "<prefix><start>" .. "<prefix><start+count-1>" exist (load generators, imports)
  /// and returns their ids in order; new ones are written in a few large durable batches.
  std::vector<user_id> create_users(std::string_view prefix, uint32_t start, uint32_t count);
  std::optional<user_id> find_user(std::string_view name) const;
  std::optional<std::string> user_name(user_id u) const;
  bool user_exists(user_id u) const;

  /// Stops both services after a final checkpoint of every user shard (a restart then replays
  /// nothing). `final_checkpoint` false stops without it, as a crash would (tests). Either way it
  /// returns once the store has run every completion addressed to the services. The store stays
  /// open.
  void stop(bool final_checkpoint = true);

  // ---- for the shards ----
  const chat_options& options() const noexcept { return opts_; }
  store::node_store& store() noexcept { return store_; }
  metrics::registry& metrics() noexcept { return metrics_; }
  id_generator& ids() noexcept { return ids_; }
  const clock& time() const noexcept { return steady_clock_source::instance(); }
  service<user_shard>& users() noexcept { return *users_; }
  /// The user shard that owns `u` (usable while the user service is being built, e.g. replay).
  uint32_t user_shard_of(user_id u) const noexcept { return user_slots_.shard_of(u); }
  service<conversation_shard>& conversations() noexcept { return *convs_; }
  /// Counts conversations evicted from memory after idle_evict (any thread).
  metrics::counter& evicted() noexcept { return evicted_; }
  /// User checkpoints: completed ones, and the users still to walk in the ones in progress.
  metrics::counter& checkpoints() noexcept { return checkpoints_; }
  metrics::gauge& checkpoint_walk() noexcept { return checkpoint_walk_; }
  /// Latency inside the node, from the gateway handing over a send: to its `stored` reply, and to
  /// the push of its delivery to a connected recipient (any thread).
  metrics::histogram& send_to_stored() noexcept { return send_to_stored_; }
  metrics::histogram& send_to_deliver() noexcept { return send_to_deliver_; }
  /// Two waits inside send -> push: for the conversation's owner, and from the commit to the
  /// recipient's owner (both for a shard's home thread; docs/operations.md).
  metrics::histogram& send_to_sequenced() noexcept { return send_to_sequenced_; }
  metrics::histogram& durable_to_owner() noexcept { return durable_to_owner_; }

  /// A message of an append batch, with the send its sender's owner answers once it is durable.
  struct appended {
    std::shared_ptr<durable_message> m;
    reply_to origin;
  };
  /// Runs on the store's writer thread after a conversation batch committed: fans the messages
  /// out to their members' owners in log order, then tells the conversation's owner.
  void on_batch_committed(conversation_id c, const store::commit_result& r, std::vector<appended>& msgs);

private:
  chat_options opts_;
  store::node_store& store_;
  metrics::registry& metrics_;
  id_generator ids_;
  slot_table user_slots_;
  std::mutex registry_mu_;
  std::unique_ptr<service<user_shard>> users_;
  std::unique_ptr<service<conversation_shard>> convs_;
  metrics::counter& sent_;
  metrics::counter& delivered_;
  metrics::counter& evicted_;
  metrics::counter& checkpoints_;
  metrics::gauge& checkpoint_walk_;
  metrics::histogram& send_to_stored_;
  metrics::histogram& send_to_deliver_;
  metrics::histogram& send_to_sequenced_;
  metrics::histogram& durable_to_owner_;
};

} // namespace agner::chat
