// Non-template helpers of service.hpp.
#include "runtime/service.hpp"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace agner::detail {

void lower_thread_priority() noexcept {
  // On Linux, setpriority with a thread id sets that thread's nice value alone.
  auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  int current = ::getpriority(PRIO_PROCESS, tid);
  ::setpriority(PRIO_PROCESS, tid, std::min(current + 10, 19));
}

} // namespace agner::detail
