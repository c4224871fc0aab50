// The process-wide thread pool: real std::thread workers, jobs from any number of callers at once.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/npas_kernels.h"

namespace npas {
namespace {

struct Job {
  const std::function<void(int)>* fn;
  int num_tasks;
  int max_helpers;               // workers allowed to join (num_threads - 1)
  std::atomic<int> next{0};      // next task index to claim
  std::atomic<int> done{0};      // tasks finished
  int helpers = 0;               // workers that joined (guarded by pool mutex)
  int active = 0;                // workers currently inside the job (guarded by pool mutex)
};

class Pool : public ThreadPool {
 public:
  ~Pool() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void ParallelFor(int num_tasks, int num_threads, const std::function<void(int)>& fn) override {
    if (num_tasks <= 0) return;
    if (num_threads <= 1 || num_tasks == 1) {
      for (int i = 0; i < num_tasks; ++i) fn(i);
      return;
    }
    int helpers = std::min(num_threads, num_tasks) - 1;
    Job job;
    job.fn = &fn;
    job.num_tasks = num_tasks;
    job.max_helpers = helpers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while ((int)workers_.size() < std::min(helpers + Busy(), kMaxWorkers))
        workers_.emplace_back([this] { WorkerLoop(); });
      jobs_.push_back(&job);
    }
    work_cv_.notify_all();
    RunTasks(&job);
    // Wait until every task is done and no worker still references the job.
    std::unique_lock<std::mutex> lock(mu_);
    RemoveJob(&job);
    done_cv_.wait(lock, [&] { return job.done.load() == num_tasks && job.active == 0; });
  }

 private:
  static constexpr int kMaxWorkers = 64;

  int Busy() const {  // helpers wanted by jobs already queued (to grow the pool for concurrent callers)
    int n = 0;
    for (Job* j : jobs_) n += j->max_helpers;
    return n;
  }

  void RemoveJob(Job* job) {
    for (auto it = jobs_.begin(); it != jobs_.end(); ++it)
      if (*it == job) {
        jobs_.erase(it);
        break;
      }
  }

  static void RunTasks(Job* job) {
    for (;;) {
      int t = job->next.fetch_add(1);
      if (t >= job->num_tasks) break;
      (*job->fn)(t);
      job->done.fetch_add(1);
    }
  }

  void WorkerLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      Job* job = nullptr;
      work_cv_.wait(lock, [&] {
        if (stop_) return true;
        for (Job* j : jobs_)
          if (j->helpers < j->max_helpers && j->next.load() < j->num_tasks) {
            job = j;
            return true;
          }
        return false;
      });
      if (stop_) return;
      job->helpers++;
      job->active++;
      lock.unlock();
      RunTasks(job);
      lock.lock();
      job->active--;
      if (job->active == 0) done_cv_.notify_all();
      // A job whose tasks are all claimed is of no more use to workers.
      if (job->next.load() >= job->num_tasks) RemoveJob(job);
    }
  }

  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Job*> jobs_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

}  // namespace

ThreadPool* SharedThreadPool() {
  // Intentionally leaked: worker threads must not be joined during static destruction (a plugin
  // unloaded while the process exits), and the pool lives as long as the process anyway.
  static Pool* pool = new Pool();
  return pool;
}

}  // namespace npas
