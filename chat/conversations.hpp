// The conversation service: each conversation's owner checks membership, deduplicates by
// (sender, nonce), assigns the dense per-conversation seq and appends to the durable log. Up to
// batches_in_flight_max append batches per conversation are in flight at once, as one store chain:
// a batch that fails (disk full) fails every later one of the conversation with it, and the seq
// rolls back to its first message, so seq never has a gap.
#pragma once

#include "chat/ids.hpp"
#include "chat/record.hpp"
#include "chat/session_sink.hpp"
#include "runtime/service.hpp"
#include "runtime/store/store.hpp"

#include <boost/unordered/unordered_flat_map.hpp>

#include <chrono>
#include <deque>
#include <unordered_map>
#include <variant>

namespace agner::chat {

class chat_core;

namespace conv_ops {
struct send {
  conversation_id conversation;
  user_id from;
  std::string nonce;
  std::string body;
  sink_ptr sink;
  std::string ref;
  time_point received; ///< when the gateway handed it over: the start of the latency metrics
};
/// From the store's writer thread: the batch of `conversation` committed (or failed).
struct committed {
  conversation_id conversation;
  store::write_status status;
  store::log_position first_position;
};
} // namespace conv_ops

struct conversation_limits {
  /// Nonces remembered per active conversation for deduplication: the last this many messages,
  /// plus all in flight. A client retrying a nonce older than that would create a new message.
  uint32_t dedup_window = 512;
  /// Messages read back from the store to rebuild the nonce window when a conversation is loaded
  /// (after a restart or an eviction): a page read per load, so smaller than the live window.
  uint32_t reload_window = 128;
  /// A conversation with nothing in flight and no send for this long is evicted from memory.
  std::chrono::milliseconds idle_evict{60'000};
  /// Append batches of one conversation at the store at once. A send that arrives while a commit
  /// is running goes out in the next group commit instead of waiting for this one to come back
  /// first (which can take two commits); more in flight buys nothing but memory.
  uint32_t batches_in_flight_max = 4;
  /// Messages waiting behind the in-flight batches of one conversation before sends are refused
  /// with `unavailable` (the client retries): bounds memory when the disk stalls.
  uint32_t queued_max = 10'000;
};

class conversation_shard {
public:
  using write_msg = std::variant<conv_ops::send, conv_ops::committed>;
  /// Read lane work (history pages): a query that reads the store in its own short read
  /// transaction and answers its session itself.
  struct read_msg {
    std::function<void()> work;
  };
  using read_reply = int;
  struct view {};

  conversation_shard(shard_context<view>& ctx, chat_core& core);
  void on_write(write_msg& m);
  static read_reply on_read(const view&, read_msg& m) {
    m.work();
    return 0;
  }

private:
  struct outgoing {
    uint64_t seq;
    message_record msg;
    /// The send that created it first, then retries that joined it while it was on its way.
    /// The first is answered by the sender's owner (docs/protocol.md: stored carries its
    /// inbox_seq), the others here.
    std::vector<reply_to> waiters;
    time_point received;
  };
  /// One append batch at the store.
  struct batch {
    std::vector<outgoing> msgs;
    /// An earlier batch failed, so the store fails this one too (a broken chain); its senders
    /// were told already and its seqs reused: only its completion is still to come.
    bool doomed = false;
  };
  struct nonce_info {
    uint64_t seq;
    message_id id;
    bool durable;
  };
  /// A loaded conversation. Not movable (its idle timer is linked into the shard's wheel by
  /// address); unordered_map nodes never move.
  struct conv_state {
    conv_state(conversation_shard& shard, conversation_id id)
        : shard(&shard), id(id), idle(&conversation_shard::on_idle, this) {}
    conversation_shard* shard;
    conversation_id id;
    /// Fires idle_evict after the last use: the conversation leaves memory (it reloads from the
    /// store when used again). Re-armed on every use, which the wheel does lazily in O(1).
    timer idle;
    uint64_t next_seq = 1;
    /// hash of (sender, nonce) -> message. A 64-bit hash: a false match needs a collision among
    /// the few hundred nonces of one conversation (~2^-48).
    boost::unordered_flat_map<uint64_t, nonce_info> nonces; ///< open addressing: no node per nonce
    std::deque<uint64_t> nonce_order; ///< for the dedup window
    std::deque<batch> in_flight;    ///< at the store, oldest first (completions come in this order)
    std::vector<outgoing> queued;   ///< waiting for the next batch
    /// A batch failed and no batch has restarted the chain since: the store remembers the chain
    /// until one does (see on_idle).
    bool chain_broken = false;
  };

  void handle(conv_ops::send& m);
  void handle(conv_ops::committed& m);
  /// Marks a use at `now`: pushes the conversation's eviction deadline to now + idle_evict.
  void touch(conv_state& s, time_point now);
  static void on_idle(timer& t, void* state);
  conv_state* load(conversation_id c, const sink_ptr& sink, const std::string& ref);
  void remember(conv_state& s, uint64_t key, nonce_info info);
  /// Sends the queued messages to the store as one batch, if the conversation may have one more
  /// in flight.
  void maybe_submit(conversation_id c, conv_state& s);
  /// Forgets the nonces of `b`'s messages and tells their senders to retry.
  void refuse(conv_state& s, batch& b);

  shard_context<view>& ctx_;
  chat_core& core_;
  std::unordered_map<conversation_id, conv_state> convs_;
};

} // namespace agner::chat
