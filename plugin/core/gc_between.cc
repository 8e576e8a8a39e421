// The between-requests collection decision (pure). See include/cowguard/gc_between.h.
#include "cowguard/gc_between.h"

namespace cowguard::between {

int Decider::decide(const Observation& now) {
    if (private_at_last_ <= 0 && now.private_bytes > 0) private_at_last_ = now.private_bytes;
    if (now.harakiri_left_s >= 0 && now.harakiri_left_s < trigger_.harakiri_margin_s) return kNone;
    long count[3];
    for (int g = 0; g < 3; g++) count[g] = now.count[g] > 0 ? now.count[g] : 0;
    if (count[0] == 0) return kNone;  // nothing allocated since the last collection: nothing to free
    bool by_count = trigger_.threshold[0] > 0 && count[0] >= trigger_.threshold[0];
    bool by_growth = trigger_.growth_bytes > 0 && now.private_bytes > 0 && private_at_last_ > 0 &&
                     now.private_bytes - private_at_last_ >= trigger_.growth_bytes;
    if (!by_count && !by_growth) return kNone;
    // As CPython's collect_generations: the oldest generation whose count reached its threshold.
    for (int g = 2; g >= 1; g--)
        if (trigger_.threshold[g] > 0 && count[g] >= trigger_.threshold[g]) return g;
    return 0;
}

void Decider::collected(int64_t private_bytes) {
    if (private_bytes > 0) private_at_last_ = private_bytes;
}

}  // namespace cowguard::between
