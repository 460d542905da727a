/// The learning-rate schedule: linear warm-up from 0 to the peak, then a cosine decay to a floor.
namespace LongNet.Training

open System

/// Warm-up + cosine schedule settings.
type Schedule =
    {
        /// The peak learning rate, reached at the end of warm-up.
        Peak: float
        /// The final learning rate as a fraction of the peak (0 … 1).
        FloorRatio: float
        /// Steps of linear warm-up (0 = start at the peak).
        WarmupSteps: int
        /// The total number of optimizer steps the cosine spans.
        TotalSteps: int
    }

/// Evaluating the schedule.
module Schedule =
    /// The learning rate of optimizer step `step` (1-based): step·peak/warmup during warm-up, then
    /// floor + (peak − floor)·(1 + cos(π·t))/2 with t the fraction of the decay done (clamped to 1).
    let learningRate (s: Schedule) (step: int) : float =
        let floor = s.Peak * s.FloorRatio

        if step <= s.WarmupSteps && s.WarmupSteps > 0 then
            s.Peak * float step / float s.WarmupSteps
        else
            let decay = max 1 (s.TotalSteps - s.WarmupSteps)
            let t = min 1.0 (float (step - s.WarmupSteps) / float decay)
            floor + (s.Peak - floor) * 0.5 * (1.0 + Math.Cos(Math.PI * t))
