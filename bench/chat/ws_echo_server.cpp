// bench_ws_echo_server: the naive peer of the chat benchmark. A minimal Beast WebSocket server:
// one io_context thread per core, async, every text message echoed back as it came. No JSON, no
// storage, no routing. Prints "echo server listening on 127.0.0.1:PORT" on stdout when ready.
//
//   bench_ws_echo_server [--port P] [--threads T]      (P = 0: any free port; T = 0: one per core)
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <vector>

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

class session : public std::enable_shared_from_this<session> {
public:
  explicit session(tcp::socket s) : ws_(std::move(s)) {}

  void start() {
    ws_.async_accept([self = shared_from_this()](beast::error_code ec) {
      if (ec)
        return;
      self->read();
    });
  }

private:
  void read() {
    ws_.async_read(buf_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec)
        return;
      self->ws_.text(self->ws_.got_text());
      self->ws_.async_write(self->buf_.data(), [self](beast::error_code ec, size_t) {
        if (ec)
          return;
        self->buf_.consume(self->buf_.size());
        self->read();
      });
    });
  }

  websocket::stream<tcp::socket> ws_;
  beast::flat_buffer buf_;
};

void accept_loop(tcp::acceptor& acc, std::vector<std::unique_ptr<net::io_context>>& ios, size_t next) {
  auto& io = *ios[next % ios.size()];
  acc.async_accept(io, [&acc, &ios, next](beast::error_code ec, tcp::socket s) {
    if (!ec) {
      beast::error_code ig;
      s.set_option(tcp::no_delay(true), ig);
      std::make_shared<session>(std::move(s))->start();
    }
    if (ec != net::error::operation_aborted)
      accept_loop(acc, ios, next + 1);
  });
}

} // namespace

int main(int argc, char** argv) {
  unsigned short port = 0;
  unsigned threads = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&](const char* name) -> const char* {
      std::string pre = std::string(name) + "=";
      if (a.rfind(pre, 0) == 0)
        return argv[i] + pre.size();
      if (a == name && i + 1 < argc)
        return argv[++i];
      return nullptr;
    };
    if (auto v = val("--port"))
      port = static_cast<unsigned short>(std::atoi(v));
    else if (auto v = val("--threads"))
      threads = static_cast<unsigned>(std::atoi(v));
    else {
      std::fprintf(stderr, "usage: bench_ws_echo_server [--port P] [--threads T]\n");
      return 2;
    }
  }
  if (threads == 0)
    threads = std::max(1u, std::thread::hardware_concurrency());
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  std::vector<std::unique_ptr<net::io_context>> ios;
  for (unsigned i = 0; i < threads; ++i)
    ios.push_back(std::make_unique<net::io_context>(1));
  tcp::acceptor acc(*ios[0], tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  acc.listen(4096);
  std::printf("echo server listening on 127.0.0.1:%u (%u threads)\n", acc.local_endpoint().port(), threads);
  std::fflush(stdout);
  accept_loop(acc, ios, 0);

  net::signal_set sig(*ios[0], SIGINT, SIGTERM);
  sig.async_wait([&](beast::error_code, int) {
    for (auto& io : ios)
      io->stop();
  });
  std::vector<std::thread> ts;
  for (unsigned i = 1; i < threads; ++i)
    ts.emplace_back([&io = *ios[i]] {
      auto guard = net::make_work_guard(io);
      io.run();
    });
  {
    auto guard = net::make_work_guard(*ios[0]);
    ios[0]->run();
  }
  for (auto& t : ts)
    t.join();
  std::_Exit(0); // sessions still open: no orderly teardown needed for a benchmark peer
}
