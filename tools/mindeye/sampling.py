"""PyTorch reference of the diffusion prior's sampling loop (DALLE2 DiffusionPrior as MindEye1
subclassed it): DDPM over all timesteps, DDIM over fewer, classifier-free guidance, x_start
prediction. Noise comes from the caller so that another implementation can be given the
same tensors.
"""
import torch


def guided(net, x, t, brain_embed, cond_scale):
    keep = torch.ones(len(x))
    logits = net(x, t, brain_embed, keep)
    if cond_scale == 1:
        return logits
    null_logits = net(x, t, brain_embed, torch.zeros(len(x)))
    return null_logits + (logits - null_logits) * cond_scale


def ddim_time_pairs(total_timesteps, steps):
    times = torch.linspace(-1.0, total_timesteps, steps=steps + 1)[:-1]
    times = list(reversed(times.int().tolist()))
    return list(zip(times[:-1], times[1:]))


@torch.no_grad()
def sample(net, schedule, brain_embed, steps, cond_scale, noise_init, noise_steps, eta=1.0):
    """Run the loop; `noise_steps[k]` is the noise of the k-th update. Returns the image embedding."""
    total = schedule.num_timesteps
    x = noise_init.clone()
    b = len(x)
    if steps >= total:
        for k, i in enumerate(reversed(range(total))):
            t = torch.full((b,), i, dtype=torch.long)
            x_start = guided(net, x, t, brain_embed, cond_scale)
            mean = schedule.posterior_mean_coef1[i] * x_start + schedule.posterior_mean_coef2[i] * x
            nonzero = 0.0 if i == 0 else 1.0
            x = mean + nonzero * (0.5 * schedule.posterior_log_variance_clipped[i]).exp() * noise_steps[k]
        return x
    alphas = schedule.alphas_cumprod_prev
    for k, (time, time_next) in enumerate(ddim_time_pairs(total, steps)):
        t = torch.full((b,), time, dtype=torch.long)
        x_start = guided(net, x, t, brain_embed, cond_scale)
        pred_noise = (schedule.sqrt_recip_alphas_cumprod[time] * x - x_start) / schedule.sqrt_recipm1_alphas_cumprod[time]
        if time_next < 0:
            x = x_start
            continue
        alpha = alphas[time]
        alpha_next = alphas[time_next]
        c1 = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
        c2 = ((1 - alpha_next) - torch.square(c1)).sqrt()
        noise = noise_steps[k] if time_next > 0 else 0.0
        x = x_start * alpha_next.sqrt() + c1 * noise + c2 * pred_noise
    return x
