// The user service: each user's owner assigns inbox_seq (in log order, so that replay after a
// crash assigns the same numbers), pushes to the user's connected devices, keeps what some device
// has not acknowledged, and serves resume.
#pragma once

#include "chat/ids.hpp"
#include "chat/record.hpp"
#include "chat/session_sink.hpp"
#include "runtime/service.hpp"
#include "runtime/store/recovery.hpp"
#include "runtime/store/write_back_cache.hpp"

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <optional>
#include <unordered_map>
#include <variant>

namespace agner::chat {

class chat_core;

/// A durable message on its way to its recipients, shared by all of them (one allocation).
struct durable_message {
  uint64_t log_position;
  conversation_id conversation;
  uint64_t seq;
  message_record msg;
  time_point received; ///< when the node got the send (for agner_chat_send_to_deliver_seconds)
  time_point durable{}; ///< when its commit returned (for agner_chat_durable_to_owner_seconds)
};
using message_ptr = std::shared_ptr<const durable_message>;

namespace user_ops {
/// A device connected (or resumed): reply `ready`, replay what it has not acknowledged.
struct attach {
  user_id user;
  std::string device;
  std::optional<uint64_t> resume_from;
  sink_ptr sink;
  std::string ref;
};
struct detach {
  user_id user;
  std::string device;
  sink_ptr sink;
};
/// Sent by the store's writer thread, in log order: the message is durable. To the sender's
/// owner it carries the send to answer: that session gets `stored` with the message's inbox_seq
/// instead of a copy of what it just sent; the sender's other devices get the copy.
struct deliver {
  user_id user;
  message_ptr m;
  reply_to origin; ///< empty for the recipient
};
struct ack {
  user_id user;
  std::string device;
  uint64_t inbox_seq;
};
/// A new device's registration is durable (or failed): finish its attach.
struct registered {
  attach a;
  uint64_t from;
  store::write_status status;
};
/// A session that received a page of its resume replay is ready for the next one.
struct more {
  user_id user;
  std::weak_ptr<session_sink> sink;
};
/// Periodic: write dirty users to the cache, checkpoint, forget idle users.
struct tick {};
struct flushed {
  store::flush_ticket ticket;
  store::write_status status;
};
/// Orderly stop: checkpoint now; `done` is set once the checkpoint is durable (or failed).
struct final_checkpoint {
  std::shared_ptr<std::promise<void>> done;
};
} // namespace user_ops

/// Limits of the user service.
struct user_limits {
  /// Devices connected at once per user; one more closes the oldest (4011).
  uint32_t sessions_max = 8;
  /// Devices the node remembers per user (connected or not). Every known device holds back the
  /// entries it has not acknowledged, and the user's record carries it on every checkpoint, so a
  /// new device beyond this makes the node forget the one seen longest ago that is not connected:
  /// a client that invents a device name per connection cannot grow the record without bound.
  uint32_t devices_max = 16;
  /// A device neither connected nor heard from (identify, ack) for this long is forgotten, so an
  /// abandoned phone stops holding up to pending_max entries for its user. If it comes back it
  /// resumes from its own last_inbox_seq while those entries are still kept, else it is told
  /// resume_too_old.
  std::chrono::milliseconds device_forget_after = std::chrono::hours(24 * 30);
  /// Unacknowledged entries kept per user for resume; older ones are dropped and a device that
  /// resumes from before them is told to fetch history (resume_too_old).
  uint32_t pending_max = 10'000;
  /// Message bodies kept in memory per user for fast offline delivery; older ones come from the log.
  uint32_t recent_max = 256;
  /// A resume replay goes out in pages of about this many bytes; the session asks for the next
  /// page when its outbound queue has drained (chat_node keeps it below the gateway's bound).
  uint32_t replay_page_bytes = 128 * 1024;
};

/// The newest messages of one inbox, by inbox_seq, for delivery without reading the log.
/// inbox_seq is dense, so a ring of up to recent_max pointers (no tree, no node per entry).
struct recent_ring {
  std::vector<message_ptr> slots; ///< a ring once it holds `cap` entries
  size_t head = 0;                ///< slot of the oldest entry
  uint64_t first = 0;             ///< inbox_seq of the oldest entry
  void push(uint64_t seq, message_ptr m, size_t cap) {
    if (slots.empty() || seq != first + slots.size()) { // first entry, or a jump: start over
      slots.clear();
      head = 0;
      first = seq;
    }
    if (slots.size() < cap) {
      slots.push_back(std::move(m));
    } else {
      slots[head] = std::move(m);
      head = (head + 1) % slots.size();
      ++first;
    }
  }
  const message_ptr* find(uint64_t seq) const noexcept {
    if (seq < first || seq - first >= slots.size())
      return nullptr;
    return &slots[(head + (seq - first)) % slots.size()];
  }
};
class user_shard final : public store::replayable {
public:
  using write_msg = std::variant<user_ops::attach, user_ops::detach, user_ops::deliver, user_ops::ack, user_ops::tick,
                                 user_ops::flushed, user_ops::final_checkpoint, user_ops::registered, user_ops::more>;
  struct read_msg {};
  using read_reply = int;
  struct view {};

  /// Builds the shard from durable state: the cache's records, then replay of the log since the
  /// shard's checkpoint.
  user_shard(shard_context<view>& ctx, chat_core& core);
  ~user_shard() override;

  void on_write(write_msg& m);
  static read_reply on_read(const view&, read_msg&) { return 0; }

  // store::replayable
  std::string domain() const override;
  void apply(const store::log_entry& e) override;

private:
  struct device_session {
    std::string device;
    sink_ptr sink;
    /// While its resume replay is paged: the last inbox_seq sent. Live deliveries wait in
    /// `pending` meanwhile and go out in order with the replay.
    uint64_t replay_after = 0;
    bool replaying = false;
  };
  struct user_state {
    user_record rec;
    std::vector<device_session> sessions;
    recent_ring recent; ///< the newest recent_max messages
    bool dirty = false;
  };

  void handle(user_ops::attach& m);
  void handle(user_ops::detach& m);
  void handle(user_ops::deliver& m);
  void handle(user_ops::ack& m);
  void handle(user_ops::tick& m);
  void handle(user_ops::flushed& m);
  void handle(user_ops::final_checkpoint& m);
  void handle(user_ops::registered& m);
  void handle(user_ops::more& m);
  /// Sends the device the pending entries after `after`, one page at most; asks its session to
  /// call back for the next page if more remain.
  void replay_page(user_id u, user_state& s, device_session& d, uint64_t after);
  /// The second half of an attach, once the device is known durably: sessions, ready, replay.
  void open_session(user_state& s, user_ops::attach& m, uint64_t from);

  user_state& load(user_id u);
  /// Folds a durable message into `u`'s inbox; returns false if already applied (replay).
  bool apply_deliver(user_id u, user_state& s, const message_ptr& m);
  /// Drops devices idle past device_forget_after, then every entry all remaining devices acked.
  void prune(user_state& s);
  /// Before registering one more device: forgets devices until there is room for it.
  void make_room_for_device(user_state& s);
  /// Registers `device` (making room first), seen now, acknowledged up to `acked`.
  void remember_device(user_state& s, const std::string& device, uint64_t acked);
  /// Closes (4011) and drops the sessions of `device`.
  static void close_sessions_of(user_state& s, const std::string& device, std::string_view why);
  static bool connected(const user_state& s, const std::string& device) {
    return std::any_of(s.sessions.begin(), s.sessions.end(), [&](auto& d) { return d.device == device; });
  }
  std::string deliver_frame(const user_state& s, const inbox_entry& e);
  /// Writes every dirty user to the cache and flushes everything with a checkpoint mark, in one
  /// turn (the final checkpoint); a walk in progress is folded into it.
  void checkpoint();
  /// Starts an incremental checkpoint: notes the mark (every position applied so far) and the
  /// users to walk, then walks the first slice.
  void begin_checkpoint();
  /// Walks the next slice: writes its dirty users to the cache and flushes them, and forgets the
  /// users nobody is connected as. After the last slice, flushes the rest with the mark.
  void checkpoint_slice();
  /// One user of a walk: to the cache if dirty (its key added to `keys` if given); forgotten if
  /// not connected. True if written. Advances `it`.
  bool checkpoint_user(std::unordered_map<user_id, user_state>::iterator& it, std::vector<std::string>* keys);
  /// Drops the walk in progress (its users stay dirty or are already written).
  void end_walk();
  /// Resolves the final-checkpoint waiters once no flush is in flight.
  void settle_final_waiters();

  shard_context<view>& ctx_;
  chat_core& core_;
  std::unique_ptr<store::write_back_cache> cache_;
  std::unordered_map<user_id, user_state> users_;
  uint64_t applied_max_ = 0;        ///< highest log position folded into this shard
  uint64_t checkpointed_ = 0;       ///< applied_max_ at the last checkpoint
  time_point last_checkpoint_{};    ///< when the last checkpoint began
  /// The incremental checkpoint in progress: the users to walk (those in memory when it began),
  /// how far it got, and its mark. The mark is written only after the whole walk: every user
  /// dirty at the start is then on its way to disk with a state covering the mark, and replay
  /// from the mark is idempotent per user (applied_through), so users written later than others
  /// are fine.
  std::vector<std::pair<uint64_t, user_id>> walk_; ///< (user_key_order, user), sorted
  size_t walk_at_ = 0;
  size_t walk_step_ = 0;
  uint64_t walk_mark_ = 0;
  bool walk_wrote_ = false;
  std::vector<std::shared_ptr<std::promise<void>>> final_waiters_; ///< set once no flush is in flight
  bool final_ = false;              ///< the final checkpoint was taken: write nothing more
};

} // namespace agner::chat
