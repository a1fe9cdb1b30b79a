//! Knowledge distillation of logits (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015): the
//! `kd` query mode, one of the training methods of the weight-level compatibility study. It matches the
//! student's *class scores* to the teacher's; nothing ties the student's embedding to the teacher's space,
//! which is why the paper finds ~0 heterogeneous accuracy with it.

use tch::{Kind, Tensor};

/// `T^2 * KL(softmax(teacher / T) || softmax(student / T))`, averaged over the batch (`[N, classes]` logits).
/// The `T^2` keeps the gradient scale independent of the temperature.
pub fn kd_loss(student: &Tensor, teacher: &Tensor, temperature: f64) -> Tensor {
    let t = temperature;
    let log_student = (student / t).log_softmax(-1, Kind::Float);
    let log_teacher = (teacher / t).log_softmax(-1, Kind::Float);
    (log_teacher.exp() * (log_teacher - log_student))
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
        * (t * t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).view([-1, 2])
    }

    #[test]
    fn zero_for_the_teacher_itself_and_shift_invariant() {
        let teacher = logits(&[2.0, -1.0, 0.5, 0.5]);
        assert!(kd_loss(&teacher, &teacher, 4.0).double_value(&[]).abs() < 1e-6);
        // Softmax ignores a constant added to every class score.
        assert!(
            kd_loss(&(&teacher + 3.0), &teacher, 4.0)
                .double_value(&[])
                .abs()
                < 1e-6
        );
    }

    #[test]
    fn matches_a_hand_computed_two_class_case() {
        // T = 1: teacher p = (0.5, 0.5), student q = softmax(ln 3, 0) = (0.75, 0.25):
        // KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3).
        let student = logits(&[3f32.ln(), 0.0]);
        let teacher = logits(&[0.0, 0.0]);
        let want = 0.5 * (4.0f64 / 3.0).ln();
        assert!((kd_loss(&student, &teacher, 1.0).double_value(&[]) - want).abs() < 1e-6);
        // T = 2 divides the logits by 2 and multiplies the KL by 4.
        let q = [3f64.sqrt() / (1.0 + 3f64.sqrt()), 1.0 / (1.0 + 3f64.sqrt())];
        let kl2 = 0.5 * (0.5 / q[0]).ln() + 0.5 * (0.5 / q[1]).ln();
        assert!((kd_loss(&student, &teacher, 2.0).double_value(&[]) - 4.0 * kl2).abs() < 1e-6);
    }

    #[test]
    fn gradient_moves_the_student_towards_the_teacher() {
        let teacher = logits(&[4.0, 0.0]);
        let student = logits(&[0.0, 1.0]).set_requires_grad(true);
        let before = kd_loss(&student, &teacher, 2.0);
        before.backward();
        let g = Vec::<f32>::try_from(student.grad().flatten(0, -1)).unwrap();
        // The teacher prefers class 0, so descent raises the student's class-0 score and lowers class 1.
        assert!(g[0] < 0.0 && g[1] > 0.0, "{g:?}");
        let stepped = tch::no_grad(|| &student - student.grad() * 0.5);
        assert!(kd_loss(&stepped, &teacher, 2.0).double_value(&[]) < before.double_value(&[]));
    }
}
